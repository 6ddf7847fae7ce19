"""Magres parsing and tensor conventions on real CASTEP outputs, checked against soprano; Eq. 5.10."""
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from reactforge.tasks.nmr import averaging, tensors

# real CASTEP outputs: a copy under tests/data/magres, else the shared data folder beside the repository
DATA = next((d for d in (Path(__file__).parent / "data" / "magres",
                         Path(__file__).resolve().parents[2] / "shared" / "data" / "magres") if d.exists()),
            Path(__file__).parent / "data" / "magres")
pytestmark = pytest.mark.skipif(not (DATA / "EDIZUM.magres").exists(), reason="magres data not present")


@pytest.fixture(scope="module")
def edizum():
    return tensors.read_magres(DATA / "EDIZUM.magres")


def test_edizum_17o_cq_and_eta_match_soprano(edizum):
    from soprano.properties.nmr import EFGAsymmetry, EFGQuadrupolarConstant

    o = [i for i, s in enumerate(edizum.get_chemical_symbols()) if s == "O"]
    assert len(o) == 8
    efg = edizum.get_array("efg")[o]
    cq = tensors.cq_Hz(efg, "17O")
    eta = tensors.eta_q(efg)
    ref_cq = np.asarray(EFGQuadrupolarConstant.get(edizum, isotopes={"O": 17}))[o]
    ref_eta = np.asarray(EFGAsymmetry.get(edizum))[o]
    assert np.allclose(cq, ref_cq, rtol=1e-6)
    assert np.allclose(eta, ref_eta, atol=1e-6)
    # two crystallographic O sites (O1, O2), four copies each
    assert np.allclose(np.abs(cq[:4]) / 1e6, 3.94, atol=0.01) and np.allclose(np.abs(cq[4:]) / 1e6, 3.25, atol=0.01)
    assert np.all((eta >= 0) & (eta <= 1))


def test_edizum_shielding_parameters_match_soprano(edizum):
    from soprano.properties.nmr import MSAnisotropy, MSAsymmetry, MSIsotropy, MSReducedAnisotropy, MSSkew, MSSpan

    ms = edizum.get_array("ms")
    p = tensors.shielding_params(ms)
    assert np.allclose(p.iso, MSIsotropy.get(edizum), atol=1e-8)
    assert np.allclose(p.anisotropy, MSAnisotropy.get(edizum), atol=1e-6)
    assert np.allclose(p.reduced_anisotropy, MSReducedAnisotropy.get(edizum), atol=1e-6)
    assert np.allclose(p.asymmetry, MSAsymmetry.get(edizum), atol=1e-6)
    assert np.allclose(p.span, MSSpan.get(edizum), atol=1e-6)
    assert np.allclose(p.skew, MSSkew.get(edizum), atol=1e-6)


def test_chemical_shift_reference(edizum):
    ms = edizum.get_array("ms")
    d = tensors.chemical_shift(ms, 250.0)
    assert np.allclose(tensors.isotropic(d), 250.0 - tensors.isotropic(ms))


@pytest.mark.parametrize("name, element", [("ethanol.magres", "O"), ("nacl.magres", "Na")])
def test_other_magres_files_parse(name, element):
    atoms = tensors.read_magres(DATA / name)
    assert element in atoms.get_chemical_symbols()
    assert atoms.get_array("ms").shape == (len(atoms), 3, 3)


def test_read_magres_without_tensors_raises(tmp_path):
    f = tmp_path / "empty.magres"
    text = (DATA / "nacl.magres").read_text()
    f.write_text(text.split("[magres]")[0])
    with pytest.raises(ValueError, match="no \\[magres\\] block"):
        tensors.read_magres(f)


def test_fast_average_is_rotation_covariant_and_invariants_unchanged(edizum):
    rng = np.random.default_rng(0)
    base = edizum.get_array("ms")[:10]
    # MD-like samples: thermal noise on the tensors
    samples = base[None] + rng.normal(scale=5.0, size=(12,) + base.shape)
    R = Rotation.random(random_state=7).as_matrix()
    avg = averaging.average_tensors(samples)
    avg_rot = averaging.average_tensors(tensors.rotate(samples, R))
    assert np.allclose(avg_rot, tensors.rotate(avg, R), atol=1e-9)
    a, b = tensors.shielding_params(avg), tensors.shielding_params(avg_rot)
    assert np.allclose(a.iso, b.iso) and np.allclose(a.span, b.span) and np.allclose(a.asymmetry, b.asymmetry)
    efg = edizum.get_array("efg")[:10]
    efg_samples = np.array([tensors.rotate(efg, Rotation.random(random_state=s).as_matrix()) for s in range(3)])
    Rg = Rotation.random(random_state=11).as_matrix()
    assert np.allclose(tensors.cq_Hz(averaging.average_tensors(efg_samples)),
                       tensors.cq_Hz(averaging.average_tensors(tensors.rotate(efg_samples, Rg))))


def test_tumbling_averages_anisotropy_away():
    # a tensor sampled over many random orientations keeps σ_iso and loses its anisotropy
    sigma = np.diag([100.0, 200.0, 400.0])
    Rs = Rotation.random(4000, random_state=1).as_matrix()
    avg = averaging.average_tensors(np.einsum("nij,jk,nlk->nil", Rs, sigma, Rs)[:, None])[0]
    p = tensors.shielding_params(avg)
    assert p.iso == pytest.approx(700 / 3)
    assert abs(p.span) < 0.05 * 300


def test_average_input_validation():
    with pytest.raises(ValueError, match="shape"):
        averaging.average_tensors(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="weights"):
        averaging.average_tensors(np.zeros((2, 1, 3, 3)), weights=[1.0, -1.0])


def test_isotope_data_from_soprano_covers_quadrupolar_metals():
    """Nuclear data come from soprano's table, including nuclei a short hand-kept table lacked."""
    zn, mg, zr = (tensors.isotope_data(i) for i in ("67Zn", "25Mg", "91Zr"))
    assert (zn.spin, mg.spin, zr.spin) == (2.5, 2.5, 2.5)
    assert zn.quadrupole_moment_fm2 == pytest.approx(15.0) and mg.quadrupole_moment_fm2 == pytest.approx(19.94)
    assert tensors.isotope_data("1H").gamma_MHz_per_T == pytest.approx(42.5775, abs=1e-3)
    assert tensors.larmor_Hz("17O", 23.5) == pytest.approx(5.7743e6 * 23.5, rel=1e-4)
    # C_Q scales with the nucleus' quadrupole moment: the same EFG on 67Zn and on 17O
    efg = np.diag([0.1, 0.2, -0.3])
    assert tensors.cq_Hz(efg, "67Zn") / tensors.cq_Hz(efg, "17O") == pytest.approx(15.0 / -2.558)
    for bad in ("O17", "18O", "17Xx"):
        with pytest.raises(ValueError, match="isotope"):
            tensors.isotope_data(bad)
    with pytest.raises(ValueError, match="spin 1/2"):
        tensors.cq_Hz(efg, "13C")
