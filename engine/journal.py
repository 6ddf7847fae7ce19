"""The journal: content hash -> task state and result, in SQLite inside the run directory.

A completed task is never run again: resuming a run replays the workflow, and every task it submits
again is answered from here. Failures are recorded with their class so a report can say what was lost.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    executor TEXT,
    status TEXT NOT NULL,          -- submitted | done | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    failure_class TEXT,
    error TEXT,
    spec TEXT NOT NULL,
    result TEXT,
    submitted_at REAL,
    finished_at REAL
)
"""


class Journal:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a killed process (what a coordinator meets) without an fsync
        # per task; only a power cut can lose the last commits, and a lost row costs a rerun, not a label
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def lookup(self, key: str) -> tuple[str, str | None, str | None, str | None] | None:
        """(status, result, failure class, error) of a task, or None if it was never submitted."""
        with self._lock:
            return self._db.execute("SELECT status, result, failure_class, error FROM tasks WHERE hash=?",
                                    (key,)).fetchone()

    def result(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT result FROM tasks WHERE hash=? AND status='done'", (key,)).fetchone()
        return row[0] if row else None

    def submitted(self, key: str, kind: str, executor: str, spec_json: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO tasks(hash, kind, executor, status, spec, submitted_at) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(hash) DO UPDATE SET status='submitted', executor=excluded.executor "
                "WHERE tasks.status != 'done'",  # a finished task stays finished (two submitters, a replay)
                (key, kind, executor, "submitted", spec_json, time.time()),
            )

    def attempt(self, key: str, failure_class: str, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE tasks SET attempts=attempts+1, failure_class=?, error=? WHERE hash=?",
                (failure_class, error[-4000:], key),
            )

    def done(self, key: str, result_json: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE tasks SET status='done', result=?, finished_at=?, attempts=attempts+1 WHERE hash=?",
                (result_json, time.time(), key),
            )

    def failed(self, key: str, failure_class: str, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE tasks SET status='failed', failure_class=?, error=?, finished_at=? WHERE hash=?",
                (failure_class, error[-4000:], time.time(), key),
            )

    def counts(self) -> dict[str, dict[str, int]]:
        """kind -> status -> count."""
        with self._lock:
            rows = self._db.execute("SELECT kind, status, COUNT(*) FROM tasks GROUP BY kind, status").fetchall()
        out: dict[str, dict[str, int]] = {}
        for kind, status, n in rows:
            out.setdefault(kind, {})[status] = n
        return out

    def failures(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT hash, kind, failure_class, error, attempts FROM tasks WHERE status='failed'"
            ).fetchall()
        return [dict(zip(("hash", "kind", "failure_class", "error", "attempts"), r)) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
