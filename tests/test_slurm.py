"""Through run.py on a real single-node SLURM (scripts/slurm-local.sh, site-configs/slurm-local.yaml): GFN2-xTB,
EMT and a Quantum ESPRESSO single point launched with srun as on ARCHER2, an MLFF MD and a GAP fit, every
executor's worker pool in a SLURM job of its own. The coordinator is SIGKILLed mid-run: its interchanges die
with it, the next coordinator cancels the SLURM jobs the killed one recorded (their worker pools with them),
answers the finished tasks from the journal and completes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import yaml
from ase import Atoms
from ase.io import write
from test_orphans import _alive, _descendants, _processes

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "slurm-local.sh"

needs_qe = pytest.mark.skipif(shutil.which("pw.x") is None, reason="Quantum ESPRESSO not installed (make system-deps)")


@pytest.fixture(scope="module")
def slurm():
    """SLURM up on this machine (a second or so when `make test` already started it)."""
    setup = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=900)
    if setup.returncode == 3:  # the script's "cannot be installed or started here", with its reason
        pytest.skip(setup.stderr.strip().splitlines()[-1])
    assert setup.returncode == 0, setup.stdout + setup.stderr
    # blocks of earlier runs on this test cluster (a killed run nobody resumed holds its block until
    # walltime) would keep this test's blocks pending: the test cluster is ours, clear Parsl's jobs
    left = [line.split()[0] for line in _squeue() if line.split()[1].startswith("parsl.")]
    if left:
        subprocess.run(["scancel", *left], capture_output=True, text=True, timeout=60)
    deadline = time.time() + 60
    while any(line.split()[1].startswith("parsl.") for line in _squeue()) and time.time() < deadline:
        time.sleep(0.5)


def _squeue() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j %T %R"], capture_output=True, text=True, timeout=60)
    return [line for line in out.stdout.splitlines() if line.strip()]


def _protocol(tmp_path: Path, model, training_set) -> Path:
    h2 = Atoms("H2", positions=[[3.0, 3.0, 2.63], [3.0, 3.0, 3.37]], cell=[6.0, 6.0, 6.0], pbc=True)
    write(tmp_path / "h2.xyz", h2)
    write(tmp_path / "cu_bulk.xyz", training_set[0])
    train = training_set[:4] + training_set[10:12] + training_set[-1:]  # bulk cells, slabs, the isolated atom
    for a in train:
        a.info.pop("adsorbate_info", None)  # a slab's dict, which extxyz cannot write
    write(tmp_path / "train.xyz", train)
    for name in ("h2o.xyz", "cu_fcc.xyz"):
        shutil.copy(ROOT / "examples" / "structures" / name, tmp_path / name)
    soap = {"rcut_hard_A": 4.0, "rcut_soft_A": 3.5, "l_max": 3, "alpha_max": 4, "n_sparse": 20}
    jobs = [
        {"name": "water-xtb", "spec": {"kind": "singlepoint", "reference": {"code": "xtb"}}, "structures": ["h2o.xyz"]},
        {"name": "copper-emt", "spec": {"kind": "singlepoint", "reference": {"code": "emt"}},
         "structures": ["cu_fcc.xyz"]},
        {"name": "h2-espresso", "structures": ["h2.xyz"], "spec": {"kind": "singlepoint", "reference": {
            "code": "espresso", "pseudopotentials": {"H": "H.pbe-kjpaw.UPF"}, "ecutwfc_Ry": 25, "ecutrho_Ry": 200,
            "kspacing_per_A": None}}},
        # long enough to be running when the single points are done; σ_thr high so it runs all its steps
        {"name": "copper-md", "structures": ["cu_bulk.xyz"], "spec": {
            "kind": "md", "model": model.model_dump(mode="json"), "steps": 300, "check_every": 50,
            "sigma_thr_eV": 10.0}},
        {"name": "gap-fit", "structures": [f"train.xyz@{i}" for i in range(7)], "spec": {
            "kind": "train", "model": {"model": "gap", "soap": [soap], "sigma_energy_eV": 0.002,
                                       "sigma_force_eV_per_A": 0.02}}},
    ]
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump({"workflow": "tasks", "name": "slurm_local", "jobs": jobs}))
    return path


def _journal(run_dir: Path) -> dict[str, tuple[str, str, str]]:
    """task folder -> (kind, status, executor)"""
    if not (run_dir / "journal.db").exists():
        return {}
    with closing(sqlite3.connect(f"file:{run_dir / 'journal.db'}?mode=ro", uri=True)) as db:
        return {f"tasks/{kind}/{key[:16]}": (kind, status, executor)
                for key, kind, status, executor in db.execute("SELECT hash, kind, status, executor FROM tasks")}


def _executions(run_dir: Path, task: str) -> int:
    return sum(len(log.read_text().splitlines()) for log in (run_dir / task).rglob("executions.log"))


def _run_jobs(run_dir: Path) -> set[str]:
    """Ids of the SLURM jobs of this run still in the queue, found by their batch script's path (under the run
    directory), independently of what the engine recorded."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %o"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if str(run_dir) in line}


@pytest.mark.qe
@needs_qe
@pytest.mark.timeout(600)
def test_kill_and_resume_on_slurm(slurm, tmp_path, tiny_gap_model, emt_cu_training_set):
    protocol = _protocol(tmp_path, tiny_gap_model, emt_cu_training_set)
    run_dir = tmp_path / "run"
    command = [sys.executable, str(ROOT / "run.py"), "--site", "slurm-local", "--run-dir", str(run_dir),
               "--no-live", str(protocol)]
    # the venv not activated: the jobs find its worker pool through the PATH the engine sets and sbatch passes on
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    coordinator = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   cwd=tmp_path, env=env)
    try:
        deadline = time.time() + 300
        while True:  # kill once the three single points are done, with the MD not
            journal = _journal(run_dir)
            done = {task for task, (_, status, _) in journal.items() if status == "done"}
            if sum(journal[t][0] == "singlepoint" for t in done) == 3:
                break
            assert coordinator.poll() is None, coordinator.stderr.read()[-3000:]
            assert time.time() < deadline, f"single points not done: {journal}; squeue: {_squeue()}"
            time.sleep(0.2)
        procs = _processes()
        ours = _descendants(coordinator.pid, procs) | {
            pid for pid, (_, cmd) in procs.items() if str(run_dir) in cmd and "process_worker_pool" in cmd}
        ours |= {p for pid in list(ours) for p in _descendants(pid, procs)}
        jobs = _run_jobs(run_dir)
    finally:
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait()
        coordinator.stderr.close()
    killed_at = time.time()
    assert not any(journal[t][0] == "md" for t in done), "the MD finished before the kill: make it longer"
    assert any("interchange" in procs[p][1] for p in ours) and any("process_worker_pool" in procs[p][1] for p in ours)
    assert jobs, "no SLURM job of the run was queued"
    recorded = {j["job_id"] for j in json.loads((run_dir / "slurm_jobs.json").read_text())}
    assert jobs <= recorded, f"jobs in the queue the coordinator had not recorded: {jobs - recorded}"
    executions = {task: _executions(run_dir, task) for task in done}
    assert set(executions.values()) == {1}

    # the interchanges go with the coordinator (engine/guard.py: 0.5 s polls, 5 s SIGTERM grace)
    interchanges = {p for p in ours if "interchange" in procs[p][1]}
    while any(_alive(p) for p in interchanges) and time.time() < killed_at + 30:
        time.sleep(0.5)
    assert not [p for p in interchanges if _alive(p)], "interchanges survive the coordinator"

    # the same command resumes: it cancels the recorded jobs first (otherwise a worker pool can hold its node
    # until walltime: one that had not reached the interchange before it died waits for it forever), and no
    # process or job of the killed coordinator is left
    resume = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                              env=env)
    try:
        while (any(_alive(p) for p in ours) or _run_jobs(run_dir) & jobs) and time.time() < killed_at + 60:
            time.sleep(0.5)
        survivors = {p: procs[p][1][:200] for p in ours if _alive(p)}
        assert not survivors, f"processes of the killed coordinator survive: {survivors}"
        assert not _run_jobs(run_dir) & jobs, f"SLURM jobs of the killed coordinator still queued: {jobs}"
        out, err = resume.communicate(timeout=240)
    finally:
        resume.kill()
    assert resume.returncode == 0, err[-3000:]
    assert "cancelled SLURM job(s)" in err

    journal = _journal(run_dir)
    assert len(journal) == 5 and {status for _, status, _ in journal.values()} == {"done"}
    # each kind ran on its executor's SLURM job: the fit in the gpu partition's
    assert {kind: executor for kind, _, executor in journal.values()} == {
        "singlepoint": "reference", "md": "mlff", "train": "training"}
    assert {task: _executions(run_dir, task) for task in done} == executions, "finished tasks ran again"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert {name: job["status"] for name, job in summary["jobs"].items()} == dict.fromkeys(
        ["water-xtb", "copper-emt", "h2-espresso", "copper-md", "gap-fit"], "done")
    assert summary["jobs"]["h2-espresso"]["energy_eV"] == pytest.approx(-31.61, abs=0.05)  # -2.3233 Ry
    (pwo,) = run_dir.glob("tasks/singlepoint/*/espresso.pwo")
    assert "running on     2 processors" in pwo.read_text()  # two MPI ranks from srun --mpi=pmix

    # a finished coordinator's blocks are scaled in by Parsl itself
    deadline = time.time() + 30
    while _run_jobs(run_dir) and time.time() < deadline:
        time.sleep(0.5)
    assert not _run_jobs(run_dir)


@pytest.mark.timeout(120)
def test_only_the_run_dir_coordinator_cancels_and_only_jobs_still_under_their_recorded_name(slurm, tmp_path):
    from reactforge.engine.cli import load_site
    from reactforge.engine.engine import SLURM_JOBS, Engine
    from reactforge.engine.lock import RunLock

    def sbatch(name: str) -> str:
        out = subprocess.run(["sbatch", "--parsable", "-J", name, "-o", "/dev/null", "--wrap", "sleep 120"],
                             capture_output=True, text=True, check=True).stdout
        return out.strip().split(";")[0]

    def queued() -> set[str]:
        return set(subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split())

    ours, other = sbatch("parsl.reference.block-0.17.5"), sbatch("someone.else")
    try:
        # `other` has the id a recorded job had before the scheduler's state was reset, under another name
        (tmp_path / SLURM_JOBS).write_text(json.dumps([
            {"executor": "reference", "job_id": ours, "job_name": "parsl.reference.block-0.17.5"},
            {"executor": "reference", "job_id": other, "job_name": "parsl.reference.block-1.18.5"}]))
        _, site = load_site("local")
        Engine(site, tmp_path).close()  # not the coordinator (no lock): a report beside a live run cancels nothing
        assert {ours, other} <= queued()
        with RunLock(tmp_path):
            Engine(site, tmp_path).close()
        deadline = time.time() + 30
        while ours in queued() and time.time() < deadline:
            time.sleep(0.5)
        assert ours not in queued() and other in queued()
        assert json.loads((tmp_path / SLURM_JOBS).read_text()) == []
    finally:
        subprocess.run(["scancel", ours, other])


@pytest.mark.slow  # the node holder does not always keep the block pending here (oversubscribed partitions)
@pytest.mark.timeout(180)
def test_a_task_waiting_for_a_pending_block_counts_as_queued_not_running(slurm, tmp_path):
    """Parsl calls a task `launched` once its executor has it; while the block waits in the SLURM queue the
    engine's progress counts it as queued, with the block shown pending, and as done once a worker ran it."""
    from reactforge.engine.engine import Engine
    from reactforge.schemas.loading import read_yaml, validate
    from reactforge.schemas.site import SiteConfig
    from reactforge.schemas.tasks import ProbeSpec

    raw = read_yaml(ROOT / "site-configs" / "slurm-local.yaml")
    raw["executors"] = {"mlff": raw["executors"]["mlff"]}
    raw["resources"] = {"reference": "mlff", "mlff": "mlff", "training": "mlff"}
    raw["executors"]["mlff"]["provider"]["init_blocks"] = 0  # the block is asked for when the task arrives
    site = validate("slurm-local.yaml", raw, SiteConfig)
    holder = subprocess.run(["sbatch", "--parsable", "-p", "standard", "--exclusive", "-J", "node-holder", "-o", "/dev/null",
                             "--wrap", "sleep 300"], capture_output=True, text=True, timeout=60, check=True)
    holder_id = holder.stdout.strip().split(";")[0]
    try:
        deadline = time.time() + 60  # the holder must hold the node before the task's block is asked for
        while not any(line.split()[:1] == [holder_id] and line.split()[2] == "RUNNING" for line in _squeue()):
            assert time.time() < deadline, f"the node holder did not start: {_squeue()}"
            time.sleep(0.5)
        with Engine(site, tmp_path / "run") as engine:
            future = engine.submit(ProbeSpec(tag=1), [])
            deadline = time.time() + 90
            while (stats := engine.stats()["mlff"])["blocks_pending"] < 1:
                assert time.time() < deadline, f"no pending block: {stats}, squeue {_squeue()}"
                time.sleep(0.5)
            for _ in range(4):  # held in the queue behind the node holder: nothing runs
                assert stats["running"] == 0 and stats["queued"] == 1, stats
                time.sleep(0.5)
                stats = engine.stats()["mlff"]
            assert not future.done()
            subprocess.run(["scancel", holder_id], capture_output=True, timeout=60, check=True)
            assert future.result(timeout=120).kind == "probe"
            stats = engine.stats()["mlff"]
            assert stats["done"] == 1 and stats["queued"] == 0 and stats["running"] == 0
    finally:
        subprocess.run(["scancel", holder_id], capture_output=True, timeout=60)
