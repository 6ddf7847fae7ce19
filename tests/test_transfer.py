"""The transfer workflow (thesis §3.5): a MACE trained on a finished run's labels, its barriers and adsorption
energies beside the run's GAP, and the dopant augmentation. The finished run is made here: a Cu adatom hopping
between the two hollows of Cu(111), EMT reference, the tiny GAP (fitted to EMT Cu) as its final model, its
labels the EMT Cu set plus rattled frames of its site slab, and its reference band an EMT NEB."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.io import read, write
from ase.mep import NEB
from ase.optimize import BFGS, FIRE
from conftest import Quiet, emt_label, store_labels, tiny_gap_spec
from reactforge.engine.engine import Engine
from reactforge.engine.store import Store
from reactforge.schemas.loading import read_yaml, validate
from reactforge.schemas.site import SiteConfig
from reactforge.schemas.transfer import TransferProtocol
from reactforge.workflows import transfer

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- pieces


def test_dope_replaces_the_slab_metal_nearest_the_site_through_the_cell_edge():
    """The site near the cell's left edge: an O is nearer than any metal, a Zn across the edge is nearest by
    the minimum image (5.3 Å away in Cartesian terms), another Zn nearer in Cartesian terms is not, and a metal
    adatom after the slab is not a slab atom. Exactly that Zn becomes Cu; fixed atoms are not rattled."""
    site = np.array([0.2, 2.0, 5.0])
    atoms = Atoms("ZnOZnZnOCu", positions=[[3.0, 2.0, 3.0],   # 0: Zn, fixed bottom
                                           [0.2, 2.0, 4.5],   # 1: O, 0.5 Å from the site
                                           [5.5, 2.0, 5.0],   # 2: Zn, 0.7 Å through the edge (x: 6.0 Å cell)
                                           [1.4, 2.0, 5.2],   # 3: Zn, 1.2 Å (Cartesian and minimum image)
                                           [3.0, 2.0, 5.0],   # 4: O
                                           [0.3, 2.0, 5.3]],  # 5: Cu adatom, 0.3 Å, not a slab atom
                  cell=[6.0, 4.0, 15.0], pbc=True)
    atoms.set_constraint(FixAtoms(indices=[0]))
    assert transfer.nearest_metal(atoms, site, n_slab=5) == 2
    rng = np.random.default_rng(3)
    ((doped, index),) = transfer.dope([atoms], site, 5, "Cu", 0.1, rng)
    assert index == 2
    changed = [i for i, (a, b) in enumerate(zip(atoms.get_chemical_symbols(), doped.get_chemical_symbols())) if a != b]
    assert changed == [2] and doped[2].symbol == "Cu"
    assert np.allclose(doped.positions[0], atoms.positions[0])  # fixed: not rattled
    moved = np.linalg.norm(doped.positions[1:] - atoms.positions[1:], axis=1)
    assert (moved > 0).all() and (moved < 0.6).all()
    # the dopant itself is no longer a candidate: a second doping takes the next metal (atom 3)
    assert transfer.nearest_metal(doped, site, n_slab=5, exclude="Cu") == 3


def test_the_final_gap_was_fitted_on_the_labels_up_to_its_block_and_iteration():
    def label(block, iteration):
        a = Atoms("Cu")
        a.info.update(block=block, iteration=iteration)
        return a

    labels = [label("initial", 0), label("surface-md", 3), label("neb", 0), label("neb", 2), label("neb", 3)]
    kept = transfer.fitted_labels(labels, "neb-2")
    assert [(a.info["block"], a.info["iteration"]) for a in kept] == [("initial", 0), ("surface-md", 3), ("neb", 0),
                                                                      ("neb", 2)]
    assert len(transfer.fitted_labels(labels, "geometry-optimisation-10")) == 2
    assert len(transfer.fitted_labels(labels, "initial")) == 5  # no block-iteration name: all labels


# ---------------------------------------------------------------------------------------------- a finished run


def _protocol() -> dict:
    data = yaml.safe_load((ROOT / "examples" / "cu-adatom-hop.yaml").read_text())
    data["bulk"].update(a_A=3.61, cubic=False)  # the tiny GAP's lattice: its slab is fcc111 2×2×3
    data["surface"] = {"miller": [1, 1, 1], "layers": 3, "size": [2, 2], "vacuum_A": 8.0, "fixed_bottom_layers": 1}
    data["active_site"] = {"kind": "site_index", "index": 11}
    data["intermediates"] = {"Cu@A": {"fragments": [{"molecule": "Cu", "position_A": [1.28, 0.74, 2.0]}]},
                             "Cu@B": {"fragments": [{"molecule": "Cu", "position_A": [1.28, -0.74, 2.0]}]}}
    data["reactions"] = [{"name": "hop", "initial": "Cu@A", "final": "Cu@B"}]
    data["parameters"]["b5_geometry"].update(mlff_fmax_eV_per_A=0.02, max_steps=100)
    data["parameters"]["b6_neb"].update(n_images=3, mlff_fmax_eV_per_A=0.05, max_steps=100)
    data["model"] = tiny_gap_spec().model.model_dump(mode="json")
    return data


def _relaxed(atoms: Atoms) -> Atoms:
    a = atoms.copy()
    a.calc = EMT()
    BFGS(a, logfile=None).run(fmax=0.02, steps=200)
    return a


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_gap_model) -> Path:
    """protocol.yaml, summary.json (final model, validation), paths/hop.validation.xyz (an EMT NEB between the
    EMT minima of the two hollows) and labels.db (EMT Cu bulk and slabs, rattled site slab and intermediates)."""
    from conftest import make_emt_cu_training_set
    from reactforge.schemas.protocol import Protocol
    from reactforge.workflows.catalysis_build import build_system

    path = tmp_path_factory.mktemp("catalysis") / "run"
    path.mkdir()
    data = _protocol()
    (path / "protocol.yaml").write_text(yaml.safe_dump(data))
    system = build_system(Protocol.model_validate(data))
    rng = np.random.default_rng(0)
    frames = []
    for atoms in [system.site_slab, *system.intermediates.values()] * 3:
        a = atoms.copy()
        a.positions += rng.normal(0.0, 0.05, a.positions.shape)
        frames.append(emt_label(a))
    store_labels(Store(path), make_emt_cu_training_set() + frames)
    ends = [_relaxed(system.intermediates[n]) for n in ("Cu@A", "Cu@B")]
    band = [ends[0]] + [ends[0].copy() for _ in range(3)] + [ends[1]]
    neb = NEB(band, climb=True, method="improvedtangent")
    neb.interpolate(mic=True)
    for image in band:
        image.calc = EMT()
    FIRE(neb, logfile=None).run(fmax=0.03, steps=300)
    energies = [float(a.get_potential_energy()) for a in band]
    (path / "paths").mkdir()
    write(path / "paths" / "hop.validation.xyz", band, format="extxyz")
    validation = {"hop": {"reference_barrier_eV": max(energies) - energies[0], "reference_energies_eV": energies,
                          "converged": True, "steps": 10}}
    (path / "summary.json").write_text(json.dumps({"model": tiny_gap_model.model_dump(mode="json"),
                                                   "validation": validation}))
    return path


def _transfer(run: Path, **extra) -> TransferProtocol:
    p = {"workflow": "transfer", "name": "transfer", "run": str(run),
         "mace": {"committee_size": 1, "hidden_irreps": "8x0e", "max_L": 0, "max_ell": 1, "correlation": 2,
                  "r_max_A": 4.0, "num_interactions": 1, "max_num_epochs": 8, "batch_size": 4,
                  "stage_two_start_epoch": None}}
    p.update(extra)
    return TransferProtocol.model_validate(p)


def _max_force(atoms: Atoms) -> float:
    a = atoms.copy()
    a.calc = EMT()
    return float(np.linalg.norm(a.get_forces(), axis=1).max())  # FixAtoms applied, as the singlepoint task does


def test_transfer_compares_mace_and_gap_and_the_dopant_never_trains_on_a_failed_label(tmp_path, finished_run):
    dopant = {"element": "Au", "configurations": 6, "held_out_fraction": 0.34, "rattle_A": 0.2, "seed": 1}
    # the doped frames as the workflow makes them; a bound on their EMT forces discards some
    train, test = transfer.Transfer(_transfer(finished_run, dopant=dopant), None, Store(tmp_path / "frames"),
                                    Quiet()).dopant_frames()
    # the bound passes the smallest-force frame of each part and (four training frames) fails at least one
    bound = max(min(map(_max_force, train)), min(map(_max_force, test))) + 1e-6
    ok_train = sum(_max_force(a) <= bound for a in train)
    ok_test = sum(_max_force(a) <= bound for a in test)
    assert len(train) == 4 and len(test) == 2 and 0 < ok_train < 4 and ok_test > 0

    p = _transfer(finished_run, dopant=dopant, max_force_eV_per_A=bound, evaluation={"neb_max_steps": 60})
    lines = transfer.plan(p)
    assert any("barriers: hop" in line and "≤ 60 steps" in line for line in lines)  # the run's: 100
    assert any("Au" in line and "atom 11" in line for line in lines)  # the site atom is the metal replaced
    with pytest.raises(ValueError, match="field 'dopant.element'.*EMT"):
        transfer.plan(_transfer(finished_run, dopant={**dopant, "element": "Zn"}))
    run_dir = tmp_path / "transfer"
    store = Store(run_dir)
    site = validate("local", read_yaml(ROOT / "site-configs" / "local.yaml"), SiteConfig)
    with Engine(site, run_dir) as engine:
        out = transfer.run(p, engine, store, Quiet())
    json.dumps(out)  # summary.json takes it as it is
    t = out["transfer"]
    assert set(t) >= {"model", "training_set_size", "barriers", "adsorption", "mean_abs_adsorption_error_meV",
                      "dopant"}
    # trained on the run's labels and the dopant's free atom: 19 EMT Cu + 9 site frames + Au
    assert t["training_set_size"] == 19 + 9 + 1
    (row,) = t["barriers"]
    assert row["reaction"] == "hop" and row["reference_eV"] == pytest.approx(
        json.loads((finished_run / "summary.json").read_text())["validation"]["hop"]["reference_barrier_eV"])
    for key in ("mace_eV", "gap_eV", "mace_error_eV", "gap_error_eV", "mace_singlepoint_eV", "gap_singlepoint_eV"):
        assert np.isfinite(row[key]), key
    assert row["gap_error_eV"] == pytest.approx(row["gap_eV"] - row["reference_eV"])
    assert set(t["adsorption"]) == {"Cu@A", "Cu@B"}
    for name, entry in t["adsorption"].items():
        # an adatom binds by eV on EMT (μ: the free Cu atom on EMT); both models' errors finite
        assert -4.5 < entry["reference_eV"] < -1.0, name
        for key in ("mace_eV", "gap_eV", "mace_error_eV", "gap_error_eV", "mace_at_reference_minimum_eV"):
            assert np.isfinite(entry[key]), (name, key)
    mae = t["mean_abs_adsorption_error_meV"]
    assert set(mae) == {"mace", "gap"} and all(np.isfinite(v) for v in mae.values())
    assert mae["gap"] == pytest.approx(1000 * np.mean([abs(e["gap_error_eV"]) for e in t["adsorption"].values()]))

    # the dopant: only labels whose reference call succeeded, Au exactly at the site atom, held out never trained
    d = t["dopant"]
    assert d["training_labels"] == ok_train and d["training_discarded"] == 4 - ok_train
    assert d["held_out"] == ok_test and d["held_out_discarded"] == 2 - ok_test
    doped = store.training_set(block="transfer-dopant", config_type="dopant")
    assert len(doped) == ok_train
    for a in doped:
        assert a.get_chemical_symbols().count("Au") == 1 and a[11].symbol == "Au"
        assert np.linalg.norm(a.arrays["REF_forces"], axis=1).max() <= bound
    held = read(run_dir / d["held_out_file"], ":")
    assert len(held) == ok_test and all(a[11].symbol == "Au" for a in held)
    trained = {a.positions.tobytes() for a in store.training_set()}
    assert not any(a.positions.tobytes() in trained for a in held)
    for key in ("without", "with"):
        assert np.isfinite(d[key]["force_rmse_eV_per_A"]) and d[key]["frames"] == ok_test
    assert t["model"]["mace_dopant"]["sha256"] != t["model"]["mace"]["sha256"]
    assert (run_dir / "report" / "transfer.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------- bad input


def _check(protocol: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "--check", "--no-preview", "--site", "local",
                           str(protocol)], check=False, capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("case", ["missing run", "not an element"])
def test_bad_protocol_is_exit_2_naming_the_file_and_the_field(tmp_path, case):
    data = {"workflow": "transfer", "name": "t", "run": "no-such-run"}
    if case == "not an element":
        data["dopant"] = {"element": "Xx"}
    protocol = tmp_path / "transfer.yaml"
    protocol.write_text(yaml.safe_dump(data))
    p = _check(protocol)
    assert p.returncode == 2, p.stdout + p.stderr
    assert str(protocol) in p.stderr and "Traceback" not in p.stderr
    assert ("field 'run': no such run directory" if case == "missing run" else "field 'dopant.element'") in p.stderr
