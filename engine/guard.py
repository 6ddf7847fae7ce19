"""Run a command that must not outlive the coordinator: `python -m reactforge.engine.guard [--watch PID] -- CMD...`

Parsl's HTEX interchange never checks for its parent, and LocalProvider starts worker pools detached
from the coordinator, so a SIGKILLed coordinator leaves both running: the pools go on executing tasks
they had prefetched (in the task directories a resumed run uses) and, under SLURM, the interchange keeps
a block allocated until its walltime. The guard starts CMD in a session of its own and, when the
coordinator is gone (`--watch PID`, default: the guard's parent), kills that whole session: the
interchange or the pool, its workers and whatever they launched (pw.x under mpirun). A SIGTERM to the
guard (Parsl's normal shutdown) is passed on the same way.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

GRACE_S = 5.0
POLL_S = 0.5


def _start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), so a reused PID is not mistaken for it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _kill_session(child: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # the leader is gone; its workers may not be
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reactforge.engine.guard")
    ap.add_argument("--watch", type=int, default=None, help="PID of the coordinator (default: the parent)")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no command")
    watched = args.watch if args.watch is not None else os.getppid()
    born = _start_time(watched)
    child = subprocess.Popen(command, start_new_session=True)  # stdin (the interchange's config) is shared

    def stop(signum, _frame):
        _kill_session(child)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        code = child.poll()
        if code is not None:
            return code
        if born is None or _start_time(watched) != born:
            _kill_session(child)
            return 1
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main())
