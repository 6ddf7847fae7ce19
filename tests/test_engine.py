"""Engine: content hashes, journal replay, failure classes and retries, executors."""
from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from reactforge.schemas.loading import read_yaml, validate
from reactforge.schemas.site import SiteConfig
from reactforge.schemas.tasks import EMTReference, EspressoReference, SinglePointSpec, XTBReference
from reactforge.engine.engine import Engine, EngineStopped, TaskFailed, classify, task_key

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def site(name="local", **launch):
    data = read_yaml(ROOT / "site-configs" / f"{name}.yaml")
    data.update(launch)
    return validate(name, data, SiteConfig)


def journal_rows(run_dir):
    with sqlite3.connect(run_dir / "journal.db") as db:
        return db.execute("SELECT kind, status, attempts, failure_class FROM tasks").fetchall()


def test_key_depends_on_spec_and_structures_not_retry_budget():
    h2o = molecule("H2O")
    spec = SinglePointSpec(reference=XTBReference())
    k = task_key(spec, [h2o])
    assert k == task_key(SinglePointSpec(reference=XTBReference(), max_retries=7), [h2o])
    assert k != task_key(SinglePointSpec(reference=XTBReference(accuracy=0.1)), [h2o])
    moved = h2o.copy()
    moved.positions[0, 0] += 1e-4
    assert k != task_key(spec, [moved])


def test_completed_task_comes_from_journal(tmp_path):
    cu = bulk("Cu", cubic=True)
    spec = SinglePointSpec(reference=EMTReference())
    with Engine(site(), tmp_path) as engine:
        first = engine.run(spec, [cu])
        assert engine.reference_calls == 1
    with Engine(site(), tmp_path) as engine:
        again = engine.run(spec, [cu])
        assert engine.reference_calls == 0
        assert engine.stats()["threads"]["cached"] == 1
    assert again.energy_eV == first.energy_eV
    np.testing.assert_allclose(again.forces_eV_per_A, first.forces_eV_per_A)


def test_unphysical_result_is_discarded_and_the_rest_goes_on(tmp_path):
    crushed = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 0.3]], cell=[8, 8, 8], pbc=True)
    good = bulk("Cu", cubic=True)
    spec = SinglePointSpec(reference=EMTReference(), max_force_eV_per_A=20.0)
    with Engine(site(), tmp_path) as engine:
        bad_f, good_f = engine.submit(spec, [crushed]), engine.submit(spec, [good])
        with pytest.raises(TaskFailed) as err:
            bad_f.result()
        assert err.value.failure_class == "unphysical"
        good.calc = EMT()
        assert good_f.result().energy_eV == pytest.approx(good.get_potential_energy(), abs=1e-10)
    rows = sorted(journal_rows(tmp_path), key=lambda r: r[1])
    assert rows[0][1] == "done" and rows[1][1:] == ("failed", 1, "unphysical")


def test_classification_of_parsl_worker_loss():
    class WorkerLost(Exception):
        pass

    from reactforge.tasks.errors import SCFNotConverged, TransientError, UnphysicalResult

    assert classify(WorkerLost()) == "transient"
    assert classify(TransientError()) == "transient"
    assert classify(SCFNotConverged()) == "scf"
    assert classify(UnphysicalResult()) == "unphysical"
    assert classify(ValueError()) == "error"


needs_qe = pytest.mark.skipif(shutil.which("pw.x") is None or shutil.which("mpirun") is None,
                              reason="Quantum ESPRESSO not installed")


def _h2():
    return Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], cell=[6, 6, 6], pbc=True)


def _qe(**kw):
    return EspressoReference(pseudopotentials={"H": "H.pbe-kjpaw.UPF"}, ecutwfc_Ry=25, ecutrho_Ry=200,
                             kspacing_per_A=None, conv_thr_eV=1e-6, **kw)


@needs_qe
@pytest.mark.qe
def test_scf_failure_is_retried_once_with_fallback_settings(tmp_path):
    spec = SinglePointSpec(reference=_qe(max_scf_steps=1))
    with Engine(site(), tmp_path) as engine:
        result = engine.run(spec, [_h2()])
    assert result.scf_fallback_used
    assert journal_rows(tmp_path) == [("singlepoint", "done", 2, "scf")]


@needs_qe
@pytest.mark.qe
def test_killed_run_is_transient_and_retried_up_to_the_limit(tmp_path):
    # SIGKILL after 0.2 s is what a walltime or a lost node does to pw.x
    spec = SinglePointSpec(reference=_qe(), max_retries=2)
    with Engine(site(reference_launch="timeout -s KILL 0.2 mpirun --allow-run-as-root -n 1"), tmp_path) as engine:
        with pytest.raises(TaskFailed) as err:
            engine.run(spec, [_h2()])
    assert err.value.failure_class == "transient"
    assert journal_rows(tmp_path) == [("singlepoint", "failed", 3, "transient")]


def test_htex_executor_runs_tasks_in_worker_processes(tmp_path):
    spec = SinglePointSpec(reference=EMTReference())
    structures = [bulk("Cu", cubic=True), bulk("Cu", a=3.7, cubic=True)]
    with Engine(site("local-htex"), tmp_path) as engine:
        results = [f.result(timeout=300) for f in [engine.submit(spec, [a]) for a in structures]]
        assert engine.stats()["reference"]["done"] == 2
    assert results[0].energy_eV != results[1].energy_eV


def test_model_enters_the_key_by_hash_not_by_location():
    from reactforge.schemas.tasks import MDSpec, ModelRef

    cu = bulk("Cu", cubic=True)
    here = MDSpec(model=ModelRef(model="gap", paths=["/a/gap.xml"], sha256="abc"), steps=10)
    moved = MDSpec(model=ModelRef(model="gap", paths=["/b/gap.xml"], sha256="abc"), steps=10)
    refit = MDSpec(model=ModelRef(model="gap", paths=["/a/gap.xml"], sha256="abd"), steps=10)
    assert task_key(here, [cu]) == task_key(moved, [cu]) != task_key(refit, [cu])


def test_final_failures_are_not_run_again_on_resume(tmp_path):
    crushed = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 0.3]], cell=[8, 8, 8], pbc=True)
    spec = SinglePointSpec(reference=EMTReference(), max_force_eV_per_A=20.0)
    for _ in range(2):
        with Engine(site(), tmp_path) as engine:
            with pytest.raises(TaskFailed) as err:
                engine.run(spec, [crushed])
            assert err.value.failure_class == "unphysical"
    assert engine.reference_calls == 0  # second time: from the journal
    assert journal_rows(tmp_path) == [("singlepoint", "failed", 1, "unphysical")]


def _two_pool_site(**extra):
    """Reference work and MLFF work in separate thread pools, as a cluster site separates node types."""
    return validate("two-pools", {
        "name": "two-pools",
        "executors": {"dft": {"type": "threads"}, "ml": {"type": "threads"}, "gpu": {"type": "threads"}},
        "resources": {"reference": "dft", "mlff": "ml", "training": "gpu"},
        **extra,
    }, SiteConfig)


def test_work_is_routed_by_what_it_computes():
    from reactforge.schemas.kinds import KINDS
    from reactforge.schemas.tasks import MACEModelSpec, ModelRef, NEBSpec, OptimiseSpec, TrainSpec

    s = _two_pool_site()
    model = ModelRef(model="gap", paths=["/a/gap.xml"], sha256="abc")

    def executor(spec):
        return s.executor_for(KINDS[spec.kind].resource_of(spec))

    assert executor(SinglePointSpec(reference=XTBReference())) == "dft"
    assert executor(NEBSpec(reference=EMTReference())) == executor(OptimiseSpec(reference=EMTReference())) == "dft"
    assert executor(NEBSpec(model=model)) == executor(OptimiseSpec(model=model)) == "ml"
    assert executor(TrainSpec(model=MACEModelSpec())) == "gpu"
    assert executor(TrainSpec()) == "ml"  # gap_fit is CPU-only: the MLFF pool unless training_cpu is set
    with pytest.raises(Exception, match="task_executors .* was replaced by resources"):
        validate("old", {"name": "old", "executors": {"t": {"type": "threads"}}, "task_executors": {"md": "t"}},
                 SiteConfig)


@needs_qe
@pytest.mark.qe
def test_reference_neb_runs_on_the_reference_executor_with_the_launch_prefix(tmp_path):
    """pw.x inside a validation NEB is started like a reference single point: the reference pool and
    the site's launch prefix (here one that kills it after 0.2 s: without the prefix the two-step NEB of
    H2 would succeed), and a killed code is a transient failure there as in a single point."""
    from reactforge.schemas.tasks import NEBSpec

    a, b = _h2(), _h2()
    b.positions[1, 2] += 0.1
    spec = NEBSpec(reference=_qe(), n_images=1, max_steps=2, max_retries=0)
    launch = "timeout -s KILL 0.2 mpirun --allow-run-as-root -n 1"
    with Engine(_two_pool_site(reference_launch=launch), tmp_path) as engine:
        with pytest.raises(TaskFailed) as err:
            engine.run(spec, [a, b])
        assert engine.stats()["dft"]["failed"] == 1 and engine.stats()["ml"]["failed"] == 0
    assert err.value.failure_class == "transient" and "exit -9" in err.value.message


@pytest.mark.timeout(120)
def test_a_journal_that_cannot_be_written_stops_the_engine_instead_of_hanging(tmp_path):
    """Disk full while recording a result: the waiting workflow gets EngineStopped, and so does every
    later submission, so the run ends with that message instead of waiting forever."""
    spec = SinglePointSpec(reference=EMTReference())
    with Engine(site(), tmp_path) as engine:
        def full(*_args):
            raise OSError(28, "No space left on device")

        engine.journal.done = full
        fut = engine.submit(spec, [bulk("Cu", cubic=True)])
        with pytest.raises(EngineStopped, match="No space left on device"):
            fut.result(timeout=60)
        with pytest.raises(EngineStopped):
            engine.submit(spec, [bulk("Cu", a=3.7, cubic=True)])


def test_a_done_task_is_never_marked_submitted_again(tmp_path):
    from reactforge.engine.journal import Journal

    journal = Journal(tmp_path / "journal.db")
    journal.submitted("k", "singlepoint", "threads", "{}")
    journal.done("k", '{"x": 1}')
    journal.submitted("k", "singlepoint", "threads", "{}")  # a second coordinator, or a replay
    assert journal.result("k") == '{"x": 1}'
    assert journal.counts() == {"singlepoint": {"done": 1}}
    journal.close()


HANG = "python3 -c 'import time; time.sleep({})'"  # a reference code that never answers (pw.x's args ignored)


@needs_qe
@pytest.mark.timeout(120)
def test_a_hung_reference_code_is_killed_at_the_site_timeout_and_counted_transient(tmp_path):
    marker = 61.2345
    spec = SinglePointSpec(reference=_qe(), max_retries=1)
    hung = _two_pool_site(reference_launch=HANG.format(marker), reference_timeout_s=1.0)
    with Engine(hung, tmp_path) as engine:
        with pytest.raises(TaskFailed) as err:
            engine.run(spec, [_h2()])
    assert err.value.failure_class == "transient" and "timeout of 1.0 s" in err.value.message
    assert journal_rows(tmp_path) == [("singlepoint", "failed", 2, "transient")]
    alive = [p for p in Path("/proc").glob("[0-9]*") if _cmdline(p).count(str(marker))]
    assert not alive  # killed with its process group, not left running


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@needs_qe
@pytest.mark.timeout(120)
def test_an_attempt_past_the_site_walltime_is_transient_and_its_late_result_ignored(tmp_path):
    """Codes that run inside the worker (tblite) cannot be killed by a launcher timeout: the engine's
    per-resource walltime ends the attempt; the retry works in its own folder."""
    spec = SinglePointSpec(reference=_qe(), max_retries=1)
    slow = _two_pool_site(reference_launch=HANG.format(4), walltime_s={"reference": 1.0})
    with Engine(slow, tmp_path) as engine:
        with pytest.raises(TaskFailed) as err:
            engine.run(spec, [_h2()])
    assert err.value.failure_class == "transient" and "wall-clock limit for reference tasks (1 s)" in err.value.message
    assert journal_rows(tmp_path) == [("singlepoint", "failed", 2, "transient")]
    (task,) = (tmp_path / "tasks" / "singlepoint").iterdir()
    assert (task / "attempt2").is_dir()


@needs_qe
@pytest.mark.qe
def test_a_resumed_task_keeps_its_scf_fallback(tmp_path):
    """The coordinator died after the first SCF failure: the resumed task starts with the fallback
    settings instead of repeating the attempt that failed."""
    from reactforge.engine.journal import Journal

    spec = SinglePointSpec(reference=_qe(max_scf_steps=1))
    key = task_key(spec, [_h2()])
    journal = Journal(tmp_path / "journal.db")
    journal.submitted(key, "singlepoint", "threads", spec.model_dump_json())
    journal.attempt(key, "scf", "SCFNotConverged: espresso: SCF not converged")
    journal.close()
    with Engine(site(), tmp_path) as engine:
        result = engine.run(spec, [_h2()])
        assert engine.reference_calls == 1
    assert result.scf_fallback_used
    assert journal_rows(tmp_path) == [("singlepoint", "done", 2, "scf")]


def test_a_worker_task_uses_its_share_of_threads_not_every_core(monkeypatch):
    import torch

    from reactforge.engine.engine import limit_threads

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    try:
        torch.set_num_threads(2)
        limit_threads(1)
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
