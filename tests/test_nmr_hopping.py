"""The nmr workflow's minima hopping (§5.3.1) with a model that learns on the way (workflows/hopping.py, shared
with the exploration workflow), what makes the minima of a free molecule distinct, the bands between them, and
a charged molecule's reference."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.cluster import Icosahedron
from ase.io import read, write
from pydantic import ValidationError

from conftest import Quiet, cu_adatom_minima, max_sigmas, tiny_gap_spec
from reactforge.engine.engine import Engine, task_key
from reactforge.engine.store import Store
from reactforge.schemas.loading import read_yaml, validate
from reactforge.schemas.nmr import NMRProtocol
from reactforge.schemas.site import SiteConfig
from reactforge.schemas.tasks import NEBSpec, SinglePointSpec, XTBReference
from reactforge.tasks.minimahopping import RigidCompare
from reactforge.tasks.neb import initial_band
from reactforge.workflows import nmr

ROOT = Path(__file__).resolve().parents[1]
BICARBONATE = ROOT / "examples" / "structures" / "bicarbonate.xyz"
C, O1, O2, O3, H = range(5)
# between the σ of the freshly trained GAP at the relaxed Cu13 (~3 meV) and what its 2000 K hops reach (~10 meV)
SIGMA_THR = 0.006


def _cu13_protocol(tmp_path: Path, **changes) -> NMRProtocol:
    structure = tmp_path / "cu13.xyz"
    write(structure, Icosahedron("Cu", 2))  # no cell: boxed by the workflow
    data = {"workflow": "nmr", "name": "nmr-hopping", "structure": str(structure),
            "train": {"reference": {"code": "emt"}, "model": tiny_gap_spec().model.model_dump(mode="json"),
                      "n_rattled": 3, "temperatures_K": [300.0], "md_steps": 20, "timestep_fs": 1.0,
                      "sigma_thr_eV": 0.5, "max_iterations": 1},
            "exploration": {"T0_K": 2000.0, "n_minima": 3, "max_hops": 3, "mdmin": 1, "sigma_thr_eV": SIGMA_THR,
                            "learning_rounds": 2},
            "shielding": {"code": "nwchem"}, "spectrum": {"isotope": "63Cu", "element": "Cu", "sigma_ref_ppm": 0.0}}
    data.update(changes)
    return NMRProtocol.model_validate(data)


def _engine(run_dir: Path) -> Engine:
    return Engine(validate("local", read_yaml(ROOT / "site-configs" / "local.yaml"), SiteConfig), run_dir)


def test_a_breaching_hop_is_labelled_the_model_refitted_and_the_search_continued(tmp_path):
    p = _cu13_protocol(tmp_path)
    assert any("a search above σ_thr 6 meV is labelled with emt" in line for line in nmr.plan(p))
    run_dir = tmp_path / "run"
    store = Store(run_dir)
    with _engine(run_dir) as engine:
        wf = nmr.NMRWorkflow(p, engine, store, Quiet())
        wf.train_model()
        trained, n_trained = wf.model, store.count()
        minima = wf.explore()
    learning = wf.hopping["learning"]
    first, *later = learning["history"]
    assert learning["enabled"] and first["interrupted"] and first["breached"] == 1
    assert first["model"] == trained.sha256 and later and later[0]["model"] != trained.sha256  # refitted
    # ... the search went on (with what it had left) until a round stayed below σ_thr or the rounds ran out
    assert learning["termination_met"] == (later[-1]["breached"] == 0)
    assert later[-1]["interrupted"] == (len(later) < p.exploration.learning_rounds)
    new = store.training_set(block="nmr-hopping")
    assert len(new) == learning["labels_added"] == sum(h["breached"] for h in learning["history"]
                                                       if h["interrupted"]) >= 1
    assert {a.info["reason"] for a in new} == {"minima hopping σ breach"}
    assert store.count() == n_trained + len(new) == learning["labels_in_training_set"]
    assert wf.model.sha256 == later[-1]["model"]  # what MD, NEB and vibrations go on with
    assert (run_dir / "models" / "nmr-hopping-1").is_dir()
    # the minima kept are the final model's: relaxed again with it, σ read with it
    assert later[-1]["minima_relaxed_again"] >= 1
    assert len(minima) == len(wf.hopping["minima"]) >= 1 and wf.hopping["minima_visited"] >= len(minima)
    assert [m["sigma_eV"] for m in wf.hopping["minima"]] == pytest.approx(max_sigmas(wf.model, minima), rel=1e-6)
    start = wf.start()  # ... and turned into the start structure's frame
    assert all(np.allclose(nmr.superposed(m, start).positions, m.positions, atol=1e-6) for m in minima)


def test_with_a_given_model_sigma_is_only_monitored(tmp_path, tiny_gap_model):
    p = _cu13_protocol(tmp_path, train=None, model={"model": "gap", "paths": tiny_gap_model.paths})
    assert any("σ_thr 6 meV monitored" in line for line in nmr.plan(p))
    run_dir = tmp_path / "run"
    with _engine(run_dir) as engine:
        wf = nmr.NMRWorkflow(p, engine, Store(run_dir), Quiet())
        minima = wf.explore()
    learning = wf.hopping["learning"]
    assert not learning["enabled"] and len(learning["history"]) == 1
    assert not learning["history"][0]["interrupted"] and learning["labels_added"] == 0
    assert wf.model.sha256 == tiny_gap_model.sha256 and minima
    assert Store(run_dir).count() == 0


def _mirror_partner(m0: Atoms) -> Atoms:
    """The bicarbonate minimum with its O–H turned by 180° about C–O1 (syn to O3 instead of O2): m0 mirrored
    through the plane of C–O1 and the molecular normal, O2 and O3 relabelled."""
    normal = np.cross(m0.positions[O2] - m0.positions[C], m0.positions[O3] - m0.positions[C])
    n = np.cross(m0.positions[O1] - m0.positions[C], normal)
    n /= np.linalg.norm(n)
    d = (m0.positions - m0.positions[C]) @ n
    m1 = Atoms(m0.get_chemical_symbols(), positions=m0.positions - 2 * d[:, None] * n)
    m1.positions[[O2, O3]] = m1.positions[[O3, O2]]
    return m1


def test_a_free_molecule_turned_is_the_same_minimum_its_mirror_partner_is_not():
    m0 = read(BICARBONATE)
    turned = m0.copy()
    turned.rotate(73, (1, 2, 3), center="COM")
    turned.translate((2.0, -1.0, 0.5))
    compare = RigidCompare()
    assert compare(m0, turned) < 1e-6
    # ASE's own comparison (like atoms paired, translation only) calls the turned copy a new minimum
    from ase.optimize.minimahopping import ComparePositions

    assert ComparePositions(translate=True)(m0, turned) > 0.5
    assert compare(m0, _mirror_partner(m0)) > 0.5  # O2 and O3 swapped roles: another NMR environment
    assert nmr.soap_distance(m0, _mirror_partner(m0)) > 0.05


def test_band_endpoints_are_superposed_and_rattled_off_the_mirror_plane():
    m0 = read(BICARBONATE)
    m1 = _mirror_partner(m0)
    turned = m1.copy()
    turned.rotate(120, (0, 1, 1), center="COM")
    aligned = nmr.superposed(turned, m0)
    assert np.allclose(aligned.get_all_distances(), m1.get_all_distances())  # only turned and moved

    def rmsd(a, b):  # mass-weighted: the Eckart frame's measure
        w = a.get_masses()
        return float(np.sqrt((w * ((a.positions - b.positions) ** 2).sum(axis=1)).sum() / w.sum()))

    assert rmsd(aligned, m0) <= rmsd(m1, m0) + 1e-9 < rmsd(turned, m0)  # as close as the mirror partner gets
    back = turned.copy()
    back.rotate(-120, (0, 1, 1), center="COM")
    back.translate((1.0, 2.0, 3.0))
    assert np.allclose(nmr.superposed(back, m1).positions, m1.positions, atol=1e-8)  # a rigid copy goes home
    periodic = m1.copy()
    periodic.set_cell([10.0] * 3, scale_atoms=False)
    periodic.pbc = True
    assert nmr.superposed(periodic, m0) is periodic  # a lattice holds its own frame
    flat = initial_band(NEBSpec(reference={"code": "emt"}, n_images=5), [m0, m1])
    rattled = initial_band(NEBSpec(reference={"code": "emt"}, n_images=5, rattle_A=0.05, fixed_atoms=[C]), [m0, m1])

    def off_plane(a: Atoms) -> float:
        centred = a.positions - a.positions.mean(axis=0)
        return float(np.linalg.svd(centred, compute_uv=False)[-1])  # the smallest extent: 0 for a planar image

    assert max(off_plane(a) for a in flat) < 1e-3  # a planar pair's band stays planar: the in-plane path
    assert min(off_plane(a) for a in rattled[1:-1]) > 1e-2
    assert all(np.allclose(b.positions[C], m0.positions[C]) for b in rattled)  # fixed atoms are not rattled
    assert np.allclose(rattled[0].positions, flat[0].positions) and np.allclose(rattled[-1].positions,
                                                                                flat[-1].positions)


def test_reference_charge_keeps_neutral_task_keys_and_reaches_tblite(tmp_path):
    from reactforge.tasks.context import TaskContext
    from reactforge.tasks.references import xtb

    m0 = read(BICARBONATE)
    neutral, anion = XTBReference(), XTBReference(charge=-1)
    assert "charge" not in json.dumps(SinglePointSpec(reference=neutral).model_dump(mode="json"))
    assert task_key(SinglePointSpec(reference=neutral), [m0]) != task_key(SinglePointSpec(reference=anion), [m0])
    ctx = TaskContext(workdir=tmp_path)
    assert xtb.calculator(anion, m0, ctx).parameters.charge == -1
    assert xtb.label(anion) == "xtb:GFN2-xTB charge -1" and xtb.label(neutral) == "xtb:GFN2-xTB"


def test_a_charged_molecule_is_labelled_charged_and_its_e0s_neutral(tmp_path):
    p = NMRProtocol.model_validate({
        "workflow": "nmr", "name": "hco3", "structure": str(BICARBONATE),
        "train": {"reference": {"code": "xtb", "charge": -1}, "model": tiny_gap_spec().model.model_dump(mode="json"),
                  "n_rattled": 2, "temperatures_K": [300.0], "md_steps": 10, "sigma_thr_eV": 1.0, "max_iterations": 1},
        "shielding": {"code": "nwchem", "charge": -1}, "spectrum": {"sigma_ref_ppm": 301.5}})
    run_dir = tmp_path / "run"
    store = Store(run_dir)
    with _engine(run_dir) as engine:
        nmr.NMRWorkflow(p, engine, store, Quiet()).train_model()
    labels = store.training_set()
    atoms = [a for a in labels if len(a) == 1]
    assert sorted(a.get_chemical_symbols()[0] for a in atoms) == ["C", "H", "O"]
    assert {a.info["reference"] for a in atoms} == {"xtb:GFN2-xTB"}
    assert {a.info["reference"] for a in labels if len(a) == 5} == {"xtb:GFN2-xTB charge -1"}


def test_the_mlff_and_the_shielding_see_the_same_charge():
    data = {"workflow": "nmr", "name": "hco3", "structure": str(BICARBONATE),
            "train": {"reference": {"code": "xtb", "charge": -1}}, "shielding": {"code": "nwchem"},
            "spectrum": {"sigma_ref_ppm": 301.5}}
    with pytest.raises(ValidationError, match="train.reference.charge -1 and shielding.charge 0 differ"):
        NMRProtocol.model_validate(data)
    NMRProtocol.model_validate({**data, "shielding": {"code": "nwchem", "charge": -1}})


def test_a_band_is_checked_against_the_reference_the_model_was_trained_on(tmp_path, tiny_gap_model):
    """Cu adatom fcc ↔ hcp on Cu(111) with the project's tiny GAP (fitted to EMT): with `train:` (reference EMT)
    the band's images get EMT single points and the table says the EMT barrier along the GAP's band."""
    from ase.calculators.emt import EMT

    from reactforge.tasks.mlff import load_mlff

    minima = cu_adatom_minima(load_mlff(tiny_gap_model))
    structure = tmp_path / "slab.extxyz"
    write(structure, minima[0])
    p = NMRProtocol.model_validate({
        "workflow": "nmr", "name": "cu-hop", "structure": str(structure),
        "fixed_atoms": [a.index for a in minima[0] if a.tag == 3], "train": {"reference": {"code": "emt"}},
        "rates": {"n_images": 3, "fmax_eV_per_A": 0.05, "max_steps": 300, "vibration_atoms": [12]},
        "spectrum": {"sigma_ref_ppm": 0.0}})
    run_dir = tmp_path / "run"
    with _engine(run_dir) as engine:
        wf = nmr.NMRWorkflow(p, engine, Store(run_dir), Quiet())
        wf.model = tiny_gap_model
        _, _, table = wf.rate_matrix(minima)
    row = table[0]
    band = row["reference_energies_on_band_eV"]
    assert len(band) == 3 + 2 and band[0 if row["from"] == 0 else -1] == 0.0
    assert row["reference_barrier_on_band_eV"] == max(band)
    emt = []
    for a in minima:  # the endpoints' EMT energies: the band's ends are the minima themselves
        a = a.copy()
        a.calc = EMT()
        emt.append(a.get_potential_energy())
    assert band[-1] - band[0] == pytest.approx(emt[1] - emt[0], abs=1e-6)
    assert abs(row["reference_barrier_on_band_eV"] - row["barrier_eV"]) < 0.1  # the tiny GAP knows EMT Cu
    assert row["k_reference_on_band_Hz"] == pytest.approx(
        row["prefactor_Hz"] * np.exp(-row["reference_barrier_on_band_eV"] / (8.617333e-5 * 300)), rel=1e-6)


def test_a_continued_search_does_not_count_its_origin_again():
    """workflows/hopping.py with scripted searches: a search continued from its last minimum relaxes and records
    that minimum first, which must not use up the minima it has left (it did: bicarbonate's four-minima search
    stopped after three breached rounds with its start recorded four times and its mirror minimum unfound)."""
    from concurrent.futures import Future

    from reactforge.schemas.results import MinimaHoppingResult
    from reactforge.schemas.tasks import MinimaHoppingSpec, ModelRef
    from reactforge.workflows.active_learning import BlockReport, Labels
    from reactforge.workflows.hopping import Start, hop_rounds

    a, b, c = (Atoms("H2", positions=[[0, 0, 0], [0, 0, d]]) for d in (0.7, 0.8, 0.9))
    rounds = [  # round 0 records a, breaches; round 1 records a again and b, breaches; round 2 records b, c
        MinimaHoppingResult(minima=[a], energies_eV=[0.0], sigma_per_minimum_eV=[0.0], hops=1, breaching=b,
                            temperature_K=1100.0),
        MinimaHoppingResult(minima=[a, b], energies_eV=[0.0, 0.1], sigma_per_minimum_eV=[0.0, 0.0], hops=2,
                            breaching=c, temperature_K=1210.0),
        MinimaHoppingResult(minima=[b, c], energies_eV=[0.1, 0.2], sigma_per_minimum_eV=[0.0, 0.0], hops=2),
    ]
    asked = []

    class Engine:
        def submit(self, spec, structures):
            asked.append((spec, structures[0]))
            f = Future()
            f.set_result(rounds[len(asked) - 1])
            return f

    class Campaign:
        def label(self, structures, **_):
            return Labels()

        def wait_labels(self):
            pass

        def retrain(self, name):
            return ModelRef(model="gap", paths=["x"], sha256=name)

    def spec(model, seed, hops, n_minima, sigma_thr_eV, T0_K):
        return MinimaHoppingSpec(model=model, seed=seed, max_hops=hops, n_minima=n_minima, sigma_thr_eV=sigma_thr_eV,
                                 T0_K=T0_K or 1000.0)

    starts = {("s", 0): Start(a)}
    model = hop_rounds(Engine(), Quiet(), starts, model=ModelRef(model="gap", paths=["x"], sha256="0"), spec=spec,
                       seed=lambda key, i: i, max_hops=10, n_minima=4, sigma_thr_eV=0.01, campaign=Campaign(),
                       max_iterations=5, report=BlockReport("b", "c"), block="b")
    assert [s.n_minima for s, _ in asked] == [4, 4, 3]  # 4 to find; 3 distinct left after a, b (a found twice)
    assert [s.max_hops for s, _ in asked] == [10, 9, 7]
    assert [s.T0_K for s, _ in asked] == [1000.0, 1100.0, 1210.0]  # at the temperature the last search reached
    assert asked[1][1] is a and asked[2][1] is b  # each continued from its last minimum
    start = starts[("s", 0)]
    assert len(start.found) == 5 and start.refound == 2 and start.minima_left(4) == 1
    assert model.sha256 == "b-2"
