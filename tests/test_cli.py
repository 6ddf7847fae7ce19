"""run.py: --check, bad input -> exit 2 naming file and field, resume / changed protocol / --force-new."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARCHER2_ENV = {"ARCHER2_BUDGET": "e999", "ARCHER2_LOGIN_ADDRESS": "10.1.2.3", "VIRTUAL_ENV": "/work/e999/venv"}


def cli(*args, env=None, cwd=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *map(str, args)], capture_output=True,
                          text=True, env=full_env, cwd=cwd or ROOT, timeout=600)


def test_check_local_prints_plan_and_executors_and_spends_nothing(tmp_path):
    run_dir = tmp_path / "run"
    p = cli("--site", "local", "--run-dir", run_dir, "--check", ROOT / "examples/singlepoints.yaml")
    assert p.returncode == 0, p.stderr
    assert "water-xtb: singlepoint on 1 structure(s)" in p.stdout
    assert "threads: in-process threads" in p.stdout
    assert not run_dir.exists()


def test_check_archer2_renders_slurm_from_environment(tmp_path):
    p = cli("--site", "archer2", "--check", ROOT / "examples/singlepoints.yaml", env=ARCHER2_ENV)
    assert p.returncode == 0, p.stderr
    assert "--partition=standard" in p.stdout and "--account=e999" in p.stdout
    assert "--partition=gpu" in p.stdout and "--gpus-per-node=4" in p.stdout


def test_site_with_unset_budget_variable_is_exit_2_naming_field():
    env = {k: v for k, v in ARCHER2_ENV.items() if k != "ARCHER2_BUDGET"}
    clean = {k: v for k, v in os.environ.items() if k != "ARCHER2_BUDGET"}
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "--site", "archer2", "--check",
                        str(ROOT / "examples/singlepoints.yaml")], capture_output=True, text=True,
                       env={**clean, **env})
    assert p.returncode == 2
    assert "archer2.yaml" in p.stderr and "ARCHER2_BUDGET" in p.stderr and "account" in p.stderr


def test_unknown_site_is_exit_2():
    p = cli("--site", "nowhere", "--check", ROOT / "examples/singlepoints.yaml")
    assert p.returncode == 2 and "known sites" in p.stderr


def test_bad_protocol_field_is_exit_2_naming_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "examples/singlepoints.yaml").read_text().replace("method: GFN2-xTB", "methd: GFN2-xTB"))
    p = cli("--check", bad)
    assert p.returncode == 2
    assert str(bad) in p.stderr and "jobs.0.spec.singlepoint.reference.xtb.methd" in p.stderr


def test_negative_threshold_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflow: tasks\nname: x\njobs:\n  - name: a\n    spec: {kind: singlepoint, "
                   "max_force_eV_per_A: -1}\n    structures: [s.xyz]\n")
    p = cli("--check", bad)
    assert p.returncode == 2 and "max_force_eV_per_A" in p.stderr


def test_not_yaml_is_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs: [unclosed\n")
    p = cli("--check", bad)
    assert p.returncode == 2 and "not valid YAML" in p.stderr


def _protocol(tmp_path, method="GFN2-xTB"):
    structures = tmp_path / "structures"
    structures.mkdir(exist_ok=True)
    for f in ("h2o.xyz", "cu_fcc.xyz"):
        (structures / f).write_text((ROOT / "examples/structures" / f).read_text())
    proto = tmp_path / "p.yaml"
    proto.write_text(f"""workflow: tasks
name: sp
jobs:
  - name: water
    spec: {{kind: singlepoint, reference: {{code: xtb, method: {method}}}}}
    structures: [structures/h2o.xyz]
  - name: copper
    spec: {{kind: singlepoint, reference: {{code: emt}}}}
    structures: [structures/cu_fcc.xyz]
""")
    return proto


def test_run_resume_and_changed_protocol(tmp_path):
    proto = _protocol(tmp_path)
    run_dir = tmp_path / "run"
    p = cli("--site", "local", "--run-dir", run_dir, "--no-live", proto)
    assert p.returncode == 0, p.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["jobs"]["water"]["status"] == "done"
    assert summary["reference_calls"] == 2
    energy = summary["jobs"]["water"]["energy_eV"]

    # same command again: everything from the journal, no reference call
    p = cli("--site", "local", "--run-dir", run_dir, "--no-live", proto)
    assert p.returncode == 0, p.stderr
    assert "resuming" in p.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["reference_calls"] == 0 and summary["jobs"]["water"]["energy_eV"] == energy

    # a changed protocol is refused, and the run directory is untouched
    changed = _protocol(tmp_path, method="GFN1-xTB")
    before = sorted(p.name for p in run_dir.iterdir())
    p = cli("--site", "local", "--run-dir", run_dir, "--no-live", changed)
    assert p.returncode == 2 and "--force-new" in p.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == before

    # --force-new keeps the old run aside and starts afresh
    p = cli("--site", "local", "--run-dir", run_dir, "--no-live", "--force-new", changed)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "run.previous-1" / "journal.db").exists()
    assert json.loads((run_dir / "summary.json").read_text())["reference_calls"] == 2


def test_missing_structure_file_is_exit_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("workflow: tasks\nname: x\njobs:\n  - name: a\n    spec: {kind: singlepoint}\n"
                   "    structures: [nowhere.xyz]\n")
    run_dir = tmp_path / "run"
    p = cli("--run-dir", run_dir, "--no-live", bad)
    assert p.returncode == 2 and "jobs.0.structures.0" in p.stderr and "nowhere.xyz" in p.stderr
    assert not run_dir.exists()
