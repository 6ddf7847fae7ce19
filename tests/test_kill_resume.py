"""Kill/resume soak: a real campaign (blocks 0-2 of the embedded protocol on GFN2-xTB, HTEX worker
processes) SIGKILLed at random points and resumed each time with the same command. Nothing of a killed
coordinator survives it, no finished task runs again, and the labels equal an uninterrupted run's."""
from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_orphans import _alive, _descendants, _processes

ROOT = Path(__file__).resolve().parents[1]
KILLS = 5


def _protocol(tmp_path: Path) -> Path:
    data = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    data["blocks"] = [0, 1, 2]
    data["validation"] = {"enabled": False}
    params = data["parameters"]
    params["b0_initial"]["n_rattled"] = 3
    for key in ("b1_bulk", "b2_surface"):
        params[key].update(md_steps=30, max_iterations=2)
    path = tmp_path / "soak.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _command(protocol: Path, run_dir: Path) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), "--site", "local-htex", "--run-dir", str(run_dir), "--no-live",
            str(protocol)]


def _executions(run_dir: Path) -> dict[str, int]:
    """Task folder -> how many times a task was started in it (its retries' folders included)."""
    return {str(d.relative_to(run_dir)): sum(len(log.read_text().splitlines()) for log in d.rglob("executions.log"))
            for d in (run_dir / "tasks").glob("*/*") if d.is_dir()}


def _done(run_dir: Path) -> set[str]:
    if not (run_dir / "journal.db").exists():
        return set()
    with sqlite3.connect(run_dir / "journal.db") as db:
        return {f"tasks/{kind}/{key[:16]}" for key, kind in
                db.execute("SELECT hash, kind FROM tasks WHERE status='done'")}


def _labels(run_dir: Path) -> dict[str, tuple[float, list]]:
    from ase.db import connect

    return {row.task: (row.REF_energy, row.toatoms().get_forces(apply_constraint=False).ravel().tolist())
            for row in connect(run_dir / "labels.db").select()}


@pytest.mark.timeout(1500)
def test_sigkill_at_random_points_resumes_without_rerunning_or_losing_anything(tmp_path):
    protocol = _protocol(tmp_path)
    start = time.time()
    reference = subprocess.run(_command(protocol, tmp_path / "reference"), capture_output=True, text=True,
                               timeout=900)
    assert reference.returncode == 0, reference.stderr[-3000:]
    duration = time.time() - start  # kill points are spread over the campaign, whatever the machine's speed

    run_dir, rng, kills = tmp_path / "run", random.Random(7), 0
    snapshots = []  # after each kill: the finished tasks and how often each task folder had been started
    while True:
        coordinator = subprocess.Popen(_command(protocol, run_dir), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True)
        if kills == KILLS:
            _, err = coordinator.communicate(timeout=900)
            assert coordinator.returncode == 0, err[-3000:]
            break
        time.sleep(3.0 + rng.uniform(0.05, 0.15) * duration)  # workers start in ~3 s, then work is done
        if coordinator.poll() is not None:  # the campaign finished before this kill
            assert coordinator.returncode == 0, coordinator.stderr.read()[-3000:]
            break
        procs = _processes()
        ours = _descendants(coordinator.pid, procs) | {
            pid for pid, (_, cmd) in procs.items() if str(run_dir) in cmd and "process_worker_pool" in cmd}
        ours |= {p for pid in list(ours) for p in _descendants(pid, procs)}
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait()
        coordinator.stderr.close()
        kills += 1
        deadline = time.time() + 30  # the guards poll every 0.5 s and give SIGTERM 5 s before SIGKILL
        while any(_alive(p) for p in ours) and time.time() < deadline:
            time.sleep(0.5)
        assert not [p for p in ours if _alive(p)], f"kill {kills}: processes of the killed coordinator survive"
        finished, executions = _done(run_dir), _executions(run_dir)
        assert all(executions.get(task, 0) >= 1 for task in finished)
        snapshots.append((finished, executions))

    final = _executions(run_dir)
    for finished, before in snapshots:
        rerun = {task for task in finished if final.get(task) != before.get(task)}
        assert not rerun, f"finished tasks executed again after a resume: {sorted(rerun)[:5]}"
    assert kills == KILLS

    expected, got = _labels(tmp_path / "reference"), _labels(run_dir)
    assert set(got) == set(expected)
    for task, (energy, forces) in expected.items():
        assert got[task][0] == pytest.approx(energy, abs=1e-6)
        assert got[task][1] == pytest.approx(forces, abs=1e-5)
