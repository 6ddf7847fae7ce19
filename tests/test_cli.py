"""The command line through run.py: --check, bad input -> exit 2 naming file and field, resume / changed
protocol / --force-new; the subcommands check, examples, export-schema and report."""
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
    lines = [ln.strip() for ln in p.stdout.splitlines()]  # check prints each script whole, indented
    assert "#SBATCH --partition=standard" in lines and "#SBATCH --account=e999" in lines
    assert "#SBATCH --partition=gpu" in lines and "#SBATCH --gpus=1" in lines


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
    assert summary["status"] == "completed" and summary["reason"] is None
    assert summary["reference_calls"] == 2
    energy = summary["jobs"]["water"]["energy_eV"]
    # what was printed is in run.log too: the run directory line, the stage with its elapsed time, the end
    # the structure is an extxyz file ase reads, energy and forces as calculator results
    from ase.io import read

    (water,) = read(run_dir / summary["jobs"]["water"]["structures"], ":")
    assert water.get_chemical_formula() == "H2O" and water.info["field"] == "atoms"
    assert water.get_potential_energy() == energy and water.get_forces().shape == (3, 3)
    log = (run_dir / "run.log").read_text()
    assert f"run directory {run_dir}: new" in log and "[0:00:00] 2 jobs |" in log and "done in" in log

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


# ---------------------------------------------------------------------------------------------- subcommands


def test_check_takes_a_shipped_example_by_name_from_any_folder(tmp_path):
    p = cli("check", "--site", "local-htex", "quickstart", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "examples/quickstart.yaml (workflow catalysis) is valid" in p.stdout and "block 6" in p.stdout
    p = cli("check", "no-such-example", cwd=tmp_path)
    assert p.returncode == 2 and "quickstart" in p.stderr  # the message lists the examples


def test_examples_are_listed_and_copied_with_their_structures(tmp_path):
    p = cli("examples")
    assert p.returncode == 0 and "quickstart" in p.stdout and "singlepoints" in p.stdout
    dest = tmp_path / "mine"
    p = cli("examples", dest)
    assert p.returncode == 0, p.stderr
    assert (dest / "structures" / "h2o.xyz").exists()
    p = cli("check", dest / "singlepoints.yaml", cwd=tmp_path)  # its structure paths resolve in the copy
    assert p.returncode == 0, p.stderr
    p = cli("examples", dest)  # never overwrites
    assert p.returncode == 2 and "exists" in p.stderr


def test_export_schema_writes_the_committed_schemas(tmp_path):
    p = cli("export-schema", tmp_path / "json")
    assert p.returncode == 0, p.stderr
    for committed in (ROOT / "schemas" / "json").glob("*.json"):
        assert json.loads((tmp_path / "json" / committed.name).read_text()) == json.loads(committed.read_text())


def test_no_arguments_is_exit_2_with_the_commands():
    p = cli()
    assert p.returncode == 2 and "export-schema" in p.stderr


def _catalysis_run_dir(run_dir: Path, training_set, model) -> None:
    """What a finished catalysis run leaves on disk for its report: labels, summary.json with block 6's
    history, a final band in paths/."""
    from ase.io import write

    from reactforge.engine.store import Store
    from reactforge.schemas.results import SinglePointResult

    Store.claim(run_dir, "workflow: catalysis\n", force_new=False)
    store = Store(run_dir)
    for i, a in enumerate(training_set):
        atoms = a.copy()
        atoms.info, forces = {}, atoms.arrays.pop("REF_forces")
        result = SinglePointResult(atoms=atoms, energy_eV=a.info["REF_energy"], forces_eV_per_A=forces.tolist(),
                                   reference="emt")
        store.add_label(result, block="initial" if i < 10 else "neb", iteration=0 if i < 10 else 1,
                        reason="bulk" if i < 10 else "NEB image", task=f"task{i:03d}", config_type=a.info["config_type"])
    rows = [{"iteration": k, "barriers": {"hop": {"mlff_barrier_eV": e, "reference_barrier_eV": 0.5,
                                                  "mlff_energies_eV": [0.0, e, 0.1],
                                                  "reference_energies_eV": [None, 0.5, None]}}}
            for k, e in ((1, 0.8), (2, 0.55))]
    summary = {"workflow": "catalysis", "protocol": "cu-hop", "wall_s": 12.5,
               "blocks": {"initial": {"iterations": 0, "labels_added": 10, "termination_met": True},
                          "neb": {"iterations": 2, "labels_added": 9, "termination_met": True, "history": rows}},
               "barriers": [{"reaction": "hop", "permutations_screened": 1, "mlff_barrier_eV": 0.55,
                             "reference_barrier_eV": 0.5, "abs_error_eV": 0.05}],
               "validation": {}, "model": model.model_dump(mode="json")}
    store.write_json("summary.json", summary)
    band = [training_set[0].copy() for _ in range(3)]
    for atoms, e in zip(band, (0.0, 0.55, 0.1)):
        atoms.info = {"energy_mlff_eV": e}
    (run_dir / "paths").mkdir()
    write(run_dir / "paths" / "hop.xyz", band)


def test_report_is_rebuilt_from_the_run_directory(tmp_path, emt_cu_training_set, tiny_gap_model):
    import sqlite3

    run_dir = tmp_path / "run"
    _catalysis_run_dir(run_dir, emt_cu_training_set, tiny_gap_model)
    p = cli("report", run_dir, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    report = run_dir / "report"
    assert {f.name for f in report.glob("*.png")} == {"training_growth.png", "barrier_history.png",
                                                      "energy_profile.png", "parity.png"}
    page = (report / "index.html").read_text()
    assert "hop" in page and "cu-hop" in page and "parity.png" in page

    # the parity numbers are evaluate tasks in the run's journal: the second report computes nothing
    def evaluations():
        with sqlite3.connect(run_dir / "journal.db") as db:
            return db.execute("select count(*) from tasks where kind='evaluate' and status='done'").fetchone()[0]

    assert evaluations() == 1
    assert cli("report", run_dir).returncode == 0 and evaluations() == 1
    (report / "parity.png").unlink()
    p = cli("report", "--no-parity", run_dir)
    assert p.returncode == 0 and not (report / "parity.png").exists()


def test_report_of_what_is_no_catalysis_run_is_exit_2(tmp_path):
    from reactforge.engine.store import Store

    p = cli("report", tmp_path)
    assert p.returncode == 2 and "not a run directory" in p.stderr
    Store.claim(tmp_path / "nmr", "workflow: nmr\n", force_new=False)
    (tmp_path / "nmr" / "summary.json").write_text('{"workflow": "nmr"}')
    p = cli("report", tmp_path / "nmr")
    assert p.returncode == 2 and "nmr run has no report" in p.stderr


HOLD_LOCK = ("from reactforge.engine.lock import RunLock; import sys, time; RunLock(sys.argv[1]).acquire(); "
             "print('held', flush=True); time.sleep(600)")


def test_a_second_coordinator_on_a_run_directory_is_exit_2_naming_the_first(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "held"
        p = cli("--site", "local", "--run-dir", run_dir, ROOT / "examples/singlepoints.yaml")
    finally:
        first.kill()
        first.wait()
    assert p.returncode == 2, p.stderr
    assert f"another coordinator is running it (pid {first.pid} on" in p.stderr and "Traceback" not in p.stderr
    assert sorted(x.name for x in run_dir.iterdir()) == ["coordinator.lock"]  # nothing of the run written


@pytest.mark.parametrize("occupant", ["folder", "file"])
def test_a_run_directory_that_is_no_run_is_exit_2_and_untouched(tmp_path, occupant):
    run_dir = tmp_path / "data"
    if occupant == "folder":
        run_dir.mkdir()
        (run_dir / "precious.txt").write_text("mine")
    else:
        run_dir.write_text("mine")
    p = cli("--site", "local", "--run-dir", run_dir, ROOT / "examples/singlepoints.yaml")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert str(run_dir) in p.stderr
    if occupant == "folder":
        assert sorted(x.name for x in run_dir.iterdir()) == ["coordinator.lock", "precious.txt"]
        assert (run_dir / "precious.txt").read_text() == "mine"
    else:
        assert run_dir.read_text() == "mine"


def test_a_block_that_cannot_go_on_ends_the_run_with_status_failed_and_exit_1(tmp_path):
    """Block 1 without block 0 has nothing to train on: the run stops with one line, no traceback,
    summary.json says why, and the journal keeps what finished."""
    import yaml

    data = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    data["blocks"] = [1]
    data["validation"] = {"enabled": False}
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(yaml.safe_dump(data))
    p = cli("--site", "local", "--run-dir", tmp_path / "run", "--no-live", protocol, cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "error: run stopped: train task" in p.stderr and "Traceback" not in p.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "train task" in summary["reason"]
    log = (tmp_path / "run" / "run.log").read_text()
    assert "initial: training on 0 configurations" in log and "error: run stopped: train task" in log


def test_summary_says_running_while_the_workflow_runs(tmp_path):
    """summary.json carries status `running` from the start, so a run killed outright never reads as finished."""
    proto = _protocol(tmp_path)
    run_dir = tmp_path / "run"
    spy = f"""
import json, sys
import reactforge.workflows.batch as batch
from reactforge.engine.cli import main
real = batch.run
def run(protocol, engine, store, progress):
    print("STATUS", json.loads((store.run_dir / "summary.json").read_text())["status"])
    return real(protocol, engine, store, progress)
batch.run = run
sys.exit(main(["--site", "local", "--run-dir", {str(run_dir)!r}, "--no-live", {str(proto)!r}]))
"""
    p = subprocess.run([sys.executable, "-c", spy], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "STATUS running" in p.stdout
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


def test_ctrl_c_stops_the_run_with_one_line_and_the_same_command_resumes(tmp_path):
    """Ctrl-C in the middle of a workflow: exit 130, a message saying how to resume and no traceback,
    summary.json `failed` with the reason; the same command then finishes the run."""
    proto = _protocol(tmp_path)
    run_dir = tmp_path / "run"
    args = ["--site", "local", "--run-dir", str(run_dir), "--no-live", str(proto)]
    interrupted = f"""
import sys
import reactforge.workflows.batch as batch
from reactforge.engine.cli import main
def run(protocol, engine, store, progress):
    raise KeyboardInterrupt
batch.run = run
sys.exit(main({args!r}))
"""
    p = subprocess.run([sys.executable, "-c", interrupted], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 130, p.stderr
    assert "interrupted" in p.stderr and "the same command resumes" in p.stderr and "Traceback" not in p.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "interrupted" in summary["reason"]
    p = cli(*args)
    assert p.returncode == 0, p.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
