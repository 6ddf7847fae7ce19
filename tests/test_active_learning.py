"""The generic loop: label -> train -> MD until a full run never breaches σ_thr."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from reactforge.schemas.loading import read_yaml, validate
from reactforge.schemas.site import SiteConfig
from reactforge.schemas.tasks import EMTReference, GAPModelSpec, SOAPDescriptor
from reactforge.workflows.active_learning import Campaign
from reactforge.engine.engine import Engine
from reactforge.engine.progress import Progress
from reactforge.engine.store import Store

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

SMALL_GAP = GAPModelSpec(soap=[SOAPDescriptor(l_max=3, alpha_max=4, n_sparse=40)], e0_method="average",
                         sigma_energy_eV=0.002, sigma_force_eV_per_A=0.05)


def _campaign(tmp_path, engine):
    store = Store(tmp_path)
    progress = Progress(engine, "test", live=False)
    return store, Campaign(engine, store, progress, EMTReference(), SMALL_GAP)


def test_md_block_labels_breaches_with_provenance_and_terminates(tmp_path):
    site = validate("local", read_yaml(ROOT / "site-configs/local.yaml"), SiteConfig)
    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 1))
    rattled = []
    for i in range(6):
        a = cu.copy()
        a.rattle(0.03, seed=i)
        rattled.append(a)
    with Engine(site, tmp_path) as engine:
        store, campaign = _campaign(tmp_path, engine)
        campaign.label(rattled, block="initial", iteration=0, reason="rattled")
        md = {"steps": 80, "temperature_K": 1000.0, "timestep_fs": 2.0, "sigma_thr_eV": 0.002}
        report = campaign.md_block("bulk", [cu], md, max_iterations=3)

    labels = store.training_set()
    reasons = {a.info["reason"] for a in labels if a.info["block"] == "bulk"}
    assert report.iterations >= 2  # the first model (6 rattles, 150 K-equivalent) must breach
    assert "threshold breach" in reasons
    assert report.labels_added == store.count(block="bulk")
    assert report.reference_calls >= report.labels_added
    assert report.breach_trace is not None and len(report.breach_trace["sigma_eV"][0]) == len(cu)
    assert max(report.breach_trace["sigma_eV"][-1]) > 0.002
    iterations = sorted({a.info["iteration"] for a in labels if a.info["block"] == "bulk"})
    assert iterations[0] == 1
    if report.termination_met:
        assert report.criterion_value < 0.002
    # every label is a real reference result: forces match EMT
    from ase.calculators.emt import EMT

    a = labels[-1].copy()
    a.calc = EMT()
    np.testing.assert_allclose(a.get_forces(), labels[-1].arrays["REF_forces"], atol=1e-8)


def test_training_order_does_not_depend_on_completion_order(tmp_path):
    import random

    from ase import Atoms

    from reactforge.schemas.results import SinglePointResult

    labels = [Atoms("H", positions=[[0, 0, 0.1 * k]], info={"task": f"t{k:04x}"}) for k in range(20)]
    shuffled = labels[:]
    random.Random(3).shuffle(shuffled)
    store = Store(tmp_path)  # labels arrive in the order their reference calls finish
    for a in shuffled:
        store.add_label(SinglePointResult(atoms=a, energy_eV=0.0, forces_eV_per_A=[[0.0, 0.0, 0.0]], reference="emt"),
                        block="b", iteration=0, reason="r", task=a.info["task"])
    assert [a.info["task"] for a in store.training_set()] == [a.info["task"] for a in labels]


class _Retrain(Exception):
    pass


class _RecordingEngine:
    """Answers every MD submission with a failed future and keeps its spec (the seeds are the test);
    stops the block at its first retraining."""

    reference_calls = 0

    def __init__(self):
        self.specs = []

    def stats(self):
        return {}

    def submit(self, spec, structures):
        from concurrent.futures import Future

        self.specs.append(spec)
        f = Future()
        f.set_exception(RuntimeError("not run"))
        return f

    def run(self, spec, structures):
        raise _Retrain


def _md_seeds(tmp_path, seed: int) -> list[int]:
    from ase import Atoms

    from reactforge.schemas.tasks import ModelRef

    engine = _RecordingEngine()
    store = Store(tmp_path / str(seed))
    campaign = Campaign(engine, store, Progress(engine, "test", live=False), EMTReference(), SMALL_GAP, seed=seed)
    campaign.model = ModelRef(model="gap", paths=["gap.xml"], sha256="0" * 64)
    md = {"steps": 10, "temperature_K": 300.0, "timestep_fs": 1.0, "sigma_thr_eV": 0.05}
    rounds = campaign.md_rounds("bulk", [Atoms("Cu")] * 3, md, max_iterations=2)
    report = next(rounds)
    with pytest.raises(_Retrain):  # failed runs never terminate a block: it goes on to retrain
        next(rounds)
    assert report.iterations == 1 and not report.termination_met
    return [s.seed for s in engine.specs]


def test_protocol_seed_gives_independent_md_and_seed_zero_keeps_its_trajectories(tmp_path):
    zero, one = _md_seeds(tmp_path, 0), _md_seeds(tmp_path, 1)
    assert zero == [1000, 1001, 1002]
    assert len(set(one)) == 3 and not set(zero) & set(one)


class _PoolEngine:
    """Reference single points answered from a thread pool (the callbacks then run in its threads);
    a structure whose info says `fail` fails like a discarded reference call."""

    reference_calls = 0

    def __init__(self, pool):
        self.pool = pool

    def stats(self):
        return {}

    def submit(self, spec, structures):
        from reactforge.engine.engine import TaskFailed
        from reactforge.schemas.results import SinglePointResult

        (atoms,) = structures
        key = f"x{atoms.positions[0, 0]:.6f}"

        def compute():
            if atoms.info.get("fail"):
                raise TaskFailed(key, "singlepoint", "unphysical", "forces too large")
            return SinglePointResult(atoms=atoms, energy_eV=-float(atoms.positions[0, 0]),
                                     forces_eV_per_A=[[0.0, 0.0, 0.0]], reference="fake")

        fut = self.pool.submit(compute)
        fut.key = key
        return fut


def test_labels_count_each_new_structure_once_across_threads(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from ase import Atoms

    distinct = [Atoms("H", positions=[[0.1 * k, 0, 0]]) for k in range(1, 31)]
    broken = Atoms("H", positions=[[99.0, 0, 0]], info={"fail": True})
    with ThreadPoolExecutor(8) as pool:
        engine = _PoolEngine(pool)
        store = Store(tmp_path)
        campaign = Campaign(engine, store, Progress(engine, "test", live=False), EMTReference(), SMALL_GAP)
        batch = distinct + [a.copy() for a in distinct[:5]] + [broken]  # five structures twice, one failing
        labels = campaign.label(batch, block="b", iteration=0, reason="r")
        assert (labels.calls, labels.added, labels.failed) == (36, 30, 1)
        results = labels.results()
        assert results[-1] is None and [r.energy_eV for r in results[:30]] == [-a.positions[0, 0] for a in distinct]
        again = campaign.label(distinct[:3], block="b", iteration=1, reason="r")
        assert (again.calls, again.added, again.failed) == (3, 0, 0)  # labelled before: not new
    assert store.count() == 30 and len(campaign.labelled) == 30


def test_the_catalysis_table_has_one_entry_per_named_block_and_parameter_section():
    from reactforge.schemas.protocol import BLOCK_NAMES, Blocks
    from reactforge.workflows.catalysis import BLOCKS

    assert list(BLOCKS) == sorted(BLOCK_NAMES)
    assert [b.parameters for b in BLOCKS.values()] == list(Blocks.model_fields)
    assert all(b.number == n and b.parameters.startswith(f"b{n}_") for n, b in BLOCKS.items())
    assert [b.name for b in BLOCKS.values()] == [BLOCK_NAMES[n] for n in sorted(BLOCK_NAMES)]
