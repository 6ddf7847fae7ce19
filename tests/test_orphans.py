"""A SIGKILLed coordinator takes its Parsl processes with it (engine/guard.py): the HTEX interchanges
and the local worker pools, which otherwise run on detached and keep executing prefetched tasks."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

COORDINATOR = """
import sys, time
from reactforge.engine.cli import load_site
from reactforge.engine.engine import Engine
_, site = load_site("local-htex")
engine = Engine(site, sys.argv[1])
engine._start()
print("started", flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            out[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd)
    return out


def _descendants(root: int, procs) -> set[int]:
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in procs.items() if ppid in frontier} - found
        found |= frontier
    return found


@pytest.mark.timeout(300)
def test_killed_coordinator_leaves_no_parsl_process(tmp_path):
    run_dir = tmp_path / "run"
    coordinator = subprocess.Popen([sys.executable, "-c", COORDINATOR, str(run_dir)], stdout=subprocess.PIPE,
                                   text=True, cwd=ROOT)
    try:
        assert coordinator.stdout.readline().strip() == "started"
        deadline = time.time() + 120
        while True:  # both worker pools up (their command lines name the run directory)
            procs = _processes()
            pools = {pid for pid, (_, cmd) in procs.items() if "process_worker_pool" in cmd and str(run_dir) in cmd}
            if len({cmd for pid, (_, cmd) in procs.items() if pid in pools and "reactforge.engine.guard" not in cmd}) >= 2:
                break
            assert time.time() < deadline, "worker pools did not start"
            time.sleep(0.5)
        ours = _descendants(coordinator.pid, procs) | {p for pool in pools for p in _descendants(pool, procs)} | pools
        assert any("interchange" in procs[p][1] for p in ours)
    finally:
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait()
    deadline = time.time() + 30  # the guards poll every 0.5 s and give SIGTERM 5 s before SIGKILL
    while any(_alive(p) for p in ours) and time.time() < deadline:
        time.sleep(0.5)
    survivors = {p: _processes().get(p, (0, "?"))[1] for p in ours if _alive(p)}
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"left running after the coordinator was killed: {survivors}"
