"""A live view a person can watch: stage, tasks per executor (running = on a worker now; tasks of a block
still pending in the scheduler's queue count as queued), blocks up and pending, reference calls.

On a terminal this is a rich Live table refreshed twice a second; elsewhere (CI, log files) a plain
line is printed whenever the stage changes and at most every 30 s otherwise. With a `log_path` (the run
directory's run.log) every stage, message and status line is also appended there, whatever the
terminal shows. The stage reads `[elapsed] context: stage`, the context being e.g. "block 3 of 7".
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _blocks(c: dict) -> str:
    """A block waiting in the scheduler's queue is why its executor's tasks are queued, not running."""
    parts = [f"{c[k]} {word}" for k, word in (("blocks_running", "up"), ("blocks_pending", "pending")) if c.get(k)]
    return ", ".join(parts) or "-"


class Progress:
    def __init__(self, engine, title: str, live: bool | None = None, log_path: Path | None = None):
        self.engine = engine
        self.title = title
        self.stage = "starting"
        self.context = ""
        self.started = time.time()
        self.log_path = Path(log_path) if log_path is not None else None
        self._log_lock = threading.Lock()
        self.live = sys.stdout.isatty() if live is None else live
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_plain = 0.0
        self._console = None

    # ------------------------------------------------------------------ what workflows call
    def set_context(self, context: str) -> None:
        """Where in the workflow the following stages are, e.g. "block 3 of 7 (adsorbate-seed-md)"."""
        self.context = context

    def set_stage(self, stage: str) -> None:
        self.stage = stage
        if not self.live:
            self._plain(force=True)
        else:
            self.write_log(f"stage: {self.describe()}")

    def log(self, message: str) -> None:
        if self._console is not None:
            self._console.log(message)
        else:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
        self.write_log(message)

    def describe(self) -> str:
        """The stage with its context and the time since the run started."""
        return f"[{_elapsed(time.time() - self.started)}] " + (f"{self.context}: " if self.context else "") + self.stage

    def write_log(self, line: str) -> None:
        """Appends one timestamped line to run.log (nothing without a log_path)."""
        if self.log_path is None:
            return
        try:
            with self._log_lock, open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line}\n")
        except OSError as err:  # a full disk stops the journal, with its own message; the log just stops
            print(f"warning: {self.log_path} not written ({err}); no more lines go there", file=sys.stderr)
            self.log_path = None

    # ------------------------------------------------------------------ rendering
    def _table(self):
        from rich.table import Table

        table = Table(title=f"{self.title} — {self.describe()}", expand=False)
        for col in ("executor", "blocks", "queued", "running", "done", "failed", "from journal"):
            table.add_column(col, justify="right" if col not in ("executor", "blocks") else "left")
        for label, c in self.engine.stats().items():
            table.add_row(label, _blocks(c), str(c["queued"]), str(c["running"]), str(c["done"]), str(c["failed"]),
                          str(c["cached"]))
        table.caption = f"reference calls so far: {self.engine.reference_calls}"
        return table

    def _plain(self, force: bool = False) -> None:
        """The status line: printed (plain mode) and appended to run.log, at most every 30 s unless forced."""
        now = time.time()
        if not force and now - self._last_plain < 30:
            return
        self._last_plain = now
        parts = [f"{label} [{_blocks(c)}] queued {c['queued']} running {c['running']} done {c['done']} "
                 f"failed {c['failed']} journal {c['cached']}" for label, c in self.engine.stats().items()]
        line = f"{self.describe()} | {' | '.join(parts)} | reference calls {self.engine.reference_calls}"
        if not self.live:
            print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
        self.write_log(line)

    def _loop(self):
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._console = Console()
            with Live(self._table(), console=self._console, refresh_per_second=2) as live:
                while not self._stop.wait(0.5):
                    live.update(self._table())
                    self._plain()  # run.log's status line every 30 s
                live.update(self._table())
            self._console = None
        else:
            while not self._stop.wait(5):
                self._plain()

    def __enter__(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._plain(force=True)
