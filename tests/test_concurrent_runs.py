"""Through the command line: two coordinators on one run directory, and a reference code that hangs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _run_py(*args):
    return [sys.executable, str(ROOT / "run.py"), *map(str, args)]


@pytest.mark.timeout(900)
def test_second_coordinator_exits_2_and_the_first_completes_without_duplicates(tmp_path):
    data = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    data["blocks"] = [0]
    data["validation"] = {"enabled": False}
    data["parameters"]["b0_initial"]["n_rattled"] = 3
    protocol = tmp_path / "b0.yaml"
    protocol.write_text(yaml.safe_dump(data))
    run_dir = tmp_path / "run"
    command = _run_py("--site", "local", "--run-dir", run_dir, "--no-live", protocol)
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = run_dir / "coordinator.lock"
    deadline = time.time() + 300
    while not (lock.exists() and f"pid {first.pid} " in lock.read_text()):
        assert first.poll() is None and time.time() < deadline, "the first coordinator never held the lock"
        time.sleep(0.2)
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    out, err = first.communicate(timeout=600)
    assert second.returncode == 2 and f"pid {first.pid} on" in second.stderr and "Traceback" not in second.stderr
    assert first.returncode == 0, err[-3000:]
    from ase.db import connect

    tasks = [row.task for row in connect(run_dir / "labels.db").select()]
    assert len(tasks) == len(set(tasks)) == json.loads((run_dir / "summary.json").read_text())["training_set_size"]


@pytest.mark.skipif(shutil.which("pw.x") is None, reason="Quantum ESPRESSO not installed")
@pytest.mark.timeout(300)
def test_a_hung_reference_expires_at_the_site_limit_and_the_run_goes_on(tmp_path):
    site = yaml.safe_load((ROOT / "site-configs" / "local.yaml").read_text())
    site["reference_launch"] = "python3 -c 'import time; time.sleep(300)'"  # never answers; pw.x's args ignored
    site["reference_timeout_s"] = 1
    (tmp_path / "hung.yaml").write_text(yaml.safe_dump(site))
    shutil.copy(ROOT / "examples" / "structures" / "cu_fcc.xyz", tmp_path)
    (tmp_path / "h2.xyz").write_text("2\nLattice=\"6 0 0 0 6 0 0 0 6\" pbc=\"T T T\"\nH 0 0 0\nH 0 0 0.74\n")
    qe = {"code": "espresso", "pseudopotentials": {"H": "H.pbe-kjpaw.UPF"}, "ecutwfc_Ry": 25, "ecutrho_Ry": 200,
          "kspacing_per_A": None}
    (tmp_path / "jobs.yaml").write_text(yaml.safe_dump({"workflow": "tasks", "name": "hung", "jobs": [
        {"name": "h2-qe", "spec": {"kind": "singlepoint", "reference": qe, "max_retries": 1}, "structures": ["h2.xyz"]},
        {"name": "copper-emt", "spec": {"kind": "singlepoint", "reference": {"code": "emt"}},
         "structures": ["cu_fcc.xyz"]}]}))
    p = subprocess.run(_run_py("--site", tmp_path / "hung.yaml", "--run-dir", tmp_path / "run", "--no-live",
                               tmp_path / "jobs.yaml"), capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = json.loads((tmp_path / "run" / "summary.json").read_text())["jobs"]
    assert jobs["h2-qe"]["status"] == "failed" and jobs["h2-qe"]["failure_class"] == "transient"
    assert "timeout of 1.0 s" in jobs["h2-qe"]["error"]
    assert jobs["copper-emt"]["status"] == "done"
