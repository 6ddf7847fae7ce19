"""The §5.3 workflow on precomputed magres files through the real engine (local threads)."""
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import Quiet, cu_adatom_minima

from reactforge.schemas.loading import read_yaml, validate
from reactforge.schemas.nmr import NMRProtocol
from reactforge.schemas.site import SiteConfig
from reactforge.workflows import nmr
from reactforge.engine.engine import Engine
from reactforge.engine.store import Store

ROOT = Path(__file__).resolve().parents[1]
DATA = next((d for d in (ROOT / "tests" / "data" / "magres", ROOT.parent / "shared" / "data" / "magres")
             if d.exists()), ROOT / "tests" / "data" / "magres")
pytestmark = pytest.mark.skipif(not (DATA / "EDIZUM.magres").exists(), reason="magres data not present")


def swapped_minimum(tmp_path) -> Path:
    """EDIZUM with the tensors of its two oxygen sites O1 ↔ O2 exchanged: the other minimum of a jump."""
    from ase.io import read, write

    a = read(DATA / "EDIZUM.magres", format="magres")
    o = [i for i, s in enumerate(a.get_chemical_symbols()) if s == "O"]
    for key in ("ms", "efg"):
        t = a.get_array(key).copy()
        t[o] = t[o[4:] + o[:4]]
        a.set_array(key, t)
    path = tmp_path / "EDIZUM_swapped.magres"
    write(path, a, format="magres")
    return path


def test_precomputed_two_minima_fast_jump_coalesces(tmp_path):
    other = swapped_minimum(tmp_path)
    protocol = NMRProtocol.model_validate({
        "workflow": "nmr", "name": "edizum",
        "precomputed": [{"static": str(DATA / "EDIZUM.magres"), "samples": [str(DATA / "EDIZUM.magres"), str(other)]},
                        {"static": str(other), "samples": [str(other), str(DATA / "EDIZUM.magres")]}],
        "rates": {"rates_Hz": [[0, 1, 1e7]]},
        "spectrum": {"sigma_ref_ppm": 287.5, "n_orientations": 233, "n_points": 1024, "ppm_min": -200, "ppm_max": 200},
    })
    site = validate("local", read_yaml(ROOT / "site-configs" / "local.yaml"), SiteConfig)
    run_dir = tmp_path / "run"
    store = Store(run_dir)
    with Engine(site, run_dir) as engine:
        out = nmr.run(protocol, engine, store, Quiet())["nmr"]
    assert out["n_minima"] == 2 and np.allclose(out["populations"], [0.5, 0.5])
    assert len(out["sites"]) == 16  # 2 minima × 8 oxygens
    row = out["sites"][0]
    assert {"static_delta_iso_ppm", "static_CQ_MHz", "static_eta_Q", "fast_CQ_MHz"} <= set(row)
    assert (run_dir / out["report"]["png"]).stat().st_size > 10_000
    spectra = json.loads((run_dir / "nmr" / "spectra.json").read_text())
    ppm = np.array(spectra["ppm"])
    static_iso = sorted({round(r["static_delta_iso_ppm"], 3) for r in out["sites"]})
    assert len(static_iso) == 2  # O1 and O2
    peaks = lambda s: ppm[np.argmax(np.sum(s, axis=0))]  # noqa: E731
    # A: O1, O2 separate; B: the jump averages them to one line near the mean of the two shifts
    a, b = np.sum(spectra["A"], axis=0), np.sum(spectra["B"], axis=0)
    mid = np.mean(static_iso)
    assert b[np.argmin(abs(ppm - mid))] > 3 * a[np.argmin(abs(ppm - mid))]
    assert abs(peaks(spectra["B"]) - mid) < 15  # second-order shift moves the CT line below δ_iso
    assert {"C", "D"} <= set(spectra)


def test_protocol_validation():
    with pytest.raises(ValueError, match="structure' and 'model'"):
        NMRProtocol.model_validate({"workflow": "nmr", "name": "x", "spectrum": {"sigma_ref_ppm": 1.0}})
    with pytest.raises(ValueError, match="need 'model'"):
        NMRProtocol.model_validate({"workflow": "nmr", "name": "x", "spectrum": {"sigma_ref_ppm": 1.0},
                                    "precomputed": [{"static": "a"}, {"static": "b"}]})
    with pytest.raises(ValueError, match="given twice"):
        NMRProtocol.model_validate({"workflow": "nmr", "name": "x", "spectrum": {"sigma_ref_ppm": 1.0},
                                    "precomputed": [{"static": "a"}, {"static": "b"}],
                                    "rates": {"rates_Hz": [[0, 1, 1.0], [1, 0, 2.0]]}})
    with pytest.raises(ValueError, match="extra"):
        NMRProtocol.model_validate({"workflow": "nmr", "name": "x", "spectrum": {"sigma_ref_ppm": 1.0, "B0": 9.4},
                                    "precomputed": [{"static": "a"}]})
    # an isotope without NMR data, or of another element than the one observed, stops at validation
    for spectrum, message in (({"isotope": "18O"}, "no NMR data"), ({"isotope": "67Zn"}, "not of element 'O'")):
        with pytest.raises(ValueError, match=message):
            NMRProtocol.model_validate({"workflow": "nmr", "name": "x", "precomputed": [{"static": "a"}],
                                        "spectrum": {"sigma_ref_ppm": 1.0, **spectrum}})
    NMRProtocol.model_validate({"workflow": "nmr", "name": "x", "precomputed": [{"static": "a"}],
                                "spectrum": {"sigma_ref_ppm": 1.0, "isotope": "67Zn", "element": "Zn"}})


def test_example_protocols_validate():
    for path in sorted((ROOT / "examples").glob("nmr_*.yaml")):
        NMRProtocol.model_validate(yaml.safe_load(path.read_text()))


def test_rates_stage_neb_and_vineyard_with_the_mlff(tmp_path, tiny_gap_model):
    """Cu adatom fcc ↔ hcp hollow on Cu(111) with the project's tiny GAP: NEB task through the engine,
    ASE vibrations of the adatom at both minima and the saddle, Vineyard rates, reversible K."""
    from reactforge.tasks.mlff import load_mlff
    from reactforge.tasks.nmr import exchange

    minima = cu_adatom_minima(load_mlff(tiny_gap_model))
    fixed = [a.index for a in minima[0] if a.tag == 3]
    protocol = NMRProtocol.model_validate({
        "workflow": "nmr", "name": "cu-hop", "fixed_atoms": fixed,
        "model": {"model": "gap", "paths": tiny_gap_model.paths},
        "precomputed": [{"static": "unused.magres"}, {"static": "unused.magres"}],
        "rates": {"n_images": 3, "fmax_eV_per_A": 0.05, "max_steps": 300, "vibration_atoms": [12]},
        "spectrum": {"sigma_ref_ppm": 0.0},
    })
    site = validate("local", read_yaml(ROOT / "site-configs" / "local.yaml"), SiteConfig)
    run_dir = tmp_path / "run"
    with Engine(site, run_dir) as engine:
        wf = nmr.NMRWorkflow(protocol, engine, Store(run_dir), Quiet())
        K, p, table = wf.rate_matrix(minima)
    assert len(table) == 1 and "k_Hz" in table[0], table
    row = table[0]
    assert 0.0 < row["barrier_eV"] < 1.0
    assert 1e11 < row["prefactor_Hz"] < 1e15
    boltzmann = np.exp(-row["barrier_eV"] / (8.617333e-5 * 300))
    assert row["k_Hz"] == pytest.approx(row["prefactor_Hz"] * boltzmann, rel=1e-6)
    assert np.isclose(p.sum(), 1.0) and exchange.detailed_balance_violation(K, p) < 1e-12
    assert np.allclose(K.sum(axis=0), 0.0, atol=1e-6 * np.abs(K).max())


def test_minima_deduplication_by_per_atom_soap():
    from ase.build import molecule

    a = molecule("CH3CH2OH")
    a.center(vacuum=5.0)
    shifted = a.copy()
    shifted.translate([0.3, -0.2, 0.1])
    shifted.rotate(40, "z", center="COM")
    assert nmr.soap_distance(a, shifted) < 1e-6  # same minimum: rigid motion
    sym = np.array(a.get_chemical_symbols())
    o = int(np.where(sym == "O")[0][0])
    dist = np.linalg.norm(a.positions - a.positions[o], axis=1)
    c = int(np.argmin(np.where(sym == "C", dist, np.inf)))  # C–O bond: the rotation axis
    h = int(np.argmin(np.where(sym == "H", dist, np.inf)))  # the hydroxyl H
    turned = a.copy()
    turned.positions[h] = a.positions[o] + (a.positions[h] - a.positions[o]) @ _rotation(
        a.positions[o] - a.positions[c], 120.0).T
    assert nmr.soap_distance(a, turned) > 0.05  # hydroxyl turned: a distinct minimum


def _rotation(axis, degrees):
    from scipy.spatial.transform import Rotation

    axis = np.asarray(axis) / np.linalg.norm(axis)
    return Rotation.from_rotvec(np.radians(degrees) * axis).as_matrix()


@pytest.mark.slow  # about a minute on 2 cores (minima hopping in a child process)
def test_exploration_and_md_sampling_stages_with_the_mlff(tmp_path, tiny_gap_model):
    """§5.3.1 with the project's tiny Cu GAP: minima hopping task, SOAP de-duplication, MD segments."""
    from ase.build import fcc111
    from ase.constraints import FixAtoms
    from ase.io import write

    slab = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=8.0)
    slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag == 3]))
    slab.rattle(0.05, seed=1)
    write(tmp_path / "start.extxyz", slab)
    fixed = [a.index for a in slab if a.tag == 3]
    protocol = NMRProtocol.model_validate({
        "workflow": "nmr", "name": "cu-explore", "structure": str(tmp_path / "start.extxyz"), "fixed_atoms": fixed,
        "model": {"model": "gap", "paths": tiny_gap_model.paths},
        "exploration": {"n_minima": 2, "max_hops": 3, "max_minima": 2, "T0_K": 600.0},
        "sampling": {"steps": 20, "n_samples": 2, "sigma_thr_eV": 1.0},
        "spectrum": {"sigma_ref_ppm": 0.0},
    })
    site = validate("local", read_yaml(ROOT / "site-configs" / "local.yaml"), SiteConfig)
    run_dir = tmp_path / "run"
    with Engine(site, run_dir) as engine:
        wf = nmr.NMRWorkflow(protocol, engine, Store(run_dir), Quiet())
        minima = wf.explore()
        samples = wf.sample_md(minima)
    assert 1 <= len(minima) <= 2
    for a, b in combinations(minima, 2):
        assert nmr.soap_distance(a, b) >= 0.05
    assert [len(s) for s in samples] == [2] * len(minima)
    assert all(len(x) == len(slab) for s in samples for x in s)
