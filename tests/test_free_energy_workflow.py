"""The free-energy workflow through the real engine (local threads) on a finished catalysis run made
here: EMT labels, the tiny GAP as its final model, a band of a Cu adatom lifted off Cu(111)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.build import add_adsorbate, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.io import write

from conftest import Quiet, store_labels, tiny_gap_spec
from reactforge.engine.engine import Engine
from reactforge.engine.store import Store
from reactforge.schemas.free_energy import FreeEnergyProtocol
from reactforge.schemas.loading import read_yaml, validate
from reactforge.schemas.site import SiteConfig
from reactforge.workflows import free_energy

ROOT = Path(__file__).resolve().parents[1]
ADATOM, SURFACE = 12, 8


def finished_run(path: Path, model, training_set) -> Path:
    """What a catalysis run leaves: protocol.yaml, labels.db, summary.json's model, paths/<reaction>.xyz."""
    store_labels(Store(path), training_set)
    data = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    data.update(reference={"code": "emt"}, model=tiny_gap_spec().model.model_dump(mode="json"), sigma_thr_eV=0.0005)
    (path / "protocol.yaml").write_text(yaml.safe_dump(data))
    (path / "summary.json").write_text(json.dumps({"model": model.model_dump(mode="json")}))
    band = []
    for height in (1.8, 2.0, 2.2, 2.4):  # the adatom lifted from its fcc hollow
        s = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=8.0)
        add_adsorbate(s, "Cu", height, "fcc")
        s.set_constraint(FixAtoms([a.index for a in s if a.tag == 3]))
        s.calc = EMT()
        s.info = {"energy_mlff_eV": s.get_potential_energy()}
        s.calc = None
        band.append(s)
    (path / "paths").mkdir()
    write(path / "paths" / "lift.xyz", band)
    return path


def protocol(run_dir: Path, **changes) -> FreeEnergyProtocol:
    data = {"workflow": "free_energy", "name": "fe", "run": str(run_dir), "temperatures_K": [300.0],
            "reactions": [{"name": "lift", "cv": {"kind": "distance", "atoms": [ADATOM, SURFACE]}}],
            "windows": {"n_windows": 4, "spring_eV_per_A2": 5.0, "equilibration_steps": 10, "production_steps": 48,
                        "friction_per_fs": 0.05},  # soft springs: neighbouring windows overlap
            "active_learning": {"max_iterations": 1, "frames_per_window": 2, "frame_spacing_steps": 10},
            "analysis": {"n_blocks": 4, "mbar": True}}
    data.update(changes)
    return FreeEnergyProtocol.model_validate(data)


@pytest.fixture
def engine_on(tmp_path):
    site = validate("local", read_yaml(ROOT / "site-configs" / "local.yaml"), SiteConfig)

    def make(run_dir):
        return Engine(site, run_dir)
    return make


def test_a_breaching_window_is_labelled_the_model_retrained_and_the_windows_rerun(
        tmp_path, tiny_gap_model, emt_cu_training_set, engine_on):
    source = finished_run(tmp_path / "catalysis", tiny_gap_model, emt_cu_training_set)
    p = protocol(source)
    plan = free_energy.plan(p)
    assert any("4 windows at 300 K" in line for line in plan) and any("σ_thr 0.5 meV" in line for line in plan)
    run_dir = tmp_path / "fe"
    store = Store(run_dir)
    with engine_on(run_dir) as engine:
        out = free_energy.run(p, engine, store, Quiet())
    learning = out["free_energy_active_learning"]
    first, second = learning["history"]
    # σ of the tiny model on an adatom is above 0.5 meV: every window breaches and stops early
    assert first["breached"] == 4 and first["windows_run"] == 4
    assert second["windows_run"] == 4 and second["model"] != first["model"]  # all rerun with the new model
    new = store.training_set(block="free_energy")
    assert len(new) == learning["labels_added"] > 0
    assert {a.info["reason"] for a in new} == {"umbrella σ breach"}
    assert all(a.info["iteration"] == 1 for a in new)
    # the catalysis run's labels were kept and fitted with the new ones
    assert store.count() == len(emt_cu_training_set) + len(new)
    assert out["model"]["sha256"] == second["model"] != tiny_gap_model.sha256
    entry = out["free_energy"]["lift"]["300K"]
    assert entry["al_iterations"] == 1 and entry["band_barrier_eV"] > 0
    assert not learning["termination_met"]  # one iteration allowed, and 0.5 meV is beyond this model
    # the last allowed round runs its windows to the end: A(ξ) from full windows, the breaches reported
    assert second["breached"] == entry["windows_above_sigma_thr"] == 4
    assert entry["samples"] == 4 * 48 and np.isfinite(entry["barrier_eV"])


def test_no_breach_no_labels_and_the_profile_is_written(tmp_path, tiny_gap_model, emt_cu_training_set, engine_on):
    source = finished_run(tmp_path / "catalysis", tiny_gap_model, emt_cu_training_set)
    p = protocol(source, active_learning={"sigma_thr_eV": 1.0})
    run_dir = tmp_path / "fe"
    store = Store(run_dir)
    with engine_on(run_dir) as engine:
        out = free_energy.run(p, engine, store, Quiet())
    learning = out["free_energy_active_learning"]
    assert learning["iterations"] == 0 and learning["termination_met"] and learning["labels_added"] == 0
    assert store.count(block="free_energy") == 0
    entry = out["free_energy"]["lift"]["300K"]
    assert entry["windows"] == 4 and entry["samples"] == 4 * 48 and entry["al_iterations"] == 0
    assert np.isfinite(entry["barrier_eV"]) and np.isfinite(entry["error_eV"]) and np.isfinite(entry["mbar_barrier_eV"])
    dat = np.loadtxt(run_dir / "free_energy" / "lift_300K.dat")
    assert dat.shape[1] == 3 and np.any(dat[:, 1] == 0.0)  # A = 0 at the reactant minimum
    assert dat[0, 0] < dat[-1, 0]  # ξ grows along this band: the adatom rises
    assert (run_dir / "report" / "free_energy.png").stat().st_size > 10_000


def test_a_run_without_its_band_is_refused(tmp_path, tiny_gap_model, emt_cu_training_set):
    source = finished_run(tmp_path / "catalysis", tiny_gap_model, emt_cu_training_set)
    p = protocol(source, reactions=[{"name": "other", "cv": {"kind": "distance", "atoms": [12, 8]}}])
    with pytest.raises(ValueError, match="no band file"):
        free_energy.plan(p)
    with pytest.raises(ValueError, match="band"):
        FreeEnergyProtocol.model_validate({"workflow": "free_energy", "name": "x", "model": {"model": "gap", "paths": ["a.xml"]},
                                           "reactions": [{"name": "r", "cv": {"atoms": [0, 1]}}]})
    with pytest.raises(ValueError, match="3 different atom indices"):
        FreeEnergyProtocol.model_validate({"workflow": "free_energy", "name": "x", "run": "r",
                                           "reactions": [{"name": "r", "cv": {"kind": "distance_difference",
                                                                               "atoms": [0, 1]}}]})


def test_the_cv_follows_the_h_atom_the_band_moves():
    """Block 6 may move either H of H2 to the O (its lowest like-atom permutation): [a, b, c] names the roles,
    and the workflow takes the H that goes to c as b."""
    from ase import Atoms
    from reactforge.schemas.free_energy import CollectiveVariable

    def image(h_moving):  # H0 stays by the metal; the moving H goes from H0 (0.75 Å) to the O (1.0 Å)
        pos = {"O": [3.0, 0, 0], "H0": [0, 0, 0], "H1": [0.75, 0, 0]}
        if h_moving:
            pos["H1"] = [2.0, 0, 0]
        return Atoms("OHH", positions=[pos["O"], pos["H0"], pos["H1"]], cell=[10, 10, 10], pbc=True)

    band = [image(False), image(True)]
    given = CollectiveVariable(kind="distance_difference", atoms=[2, 1, 0])  # b = atom 1, which stays
    cv = free_energy.follow_band(given, band)
    assert cv.atoms == [1, 2, 0]  # the H that moves (atom 2) is b
    xi = [free_energy.cv_value(a, cv) for a in band]
    assert xi[0] == pytest.approx(0.75 - 2.25) and xi[1] == pytest.approx(2.0 - 1.0)
    assert free_energy.follow_band(cv, band) == cv  # already following: kept
    same = CollectiveVariable(kind="distance", atoms=[2, 1])
    assert free_energy.follow_band(same, band) == same  # d(a, b) = d(b, a): the protocol's order stays
