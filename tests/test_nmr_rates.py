"""Rates: Eyring (Eq. 3.2), harmonic TST with a Vineyard prefactor from ASE vibrations, the thesis figure."""
import numpy as np
import pytest
from ase.build import add_adsorbate, fcc100
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.mep import NEB
from ase.optimize import BFGS

from reactforge.tasks.nmr import exchange, rates

CM1_HZ = 2.99792458e10  # 1 cm⁻¹ in Hz


def test_thesis_rate_figure_within_prefactor_assumption():
    """§5.4.1: a 0.49 eV barrier at room temperature gave 2.4×10⁵ Hz with a harmonic prefactor."""
    thesis = 2.4e5
    # Eyring's k_B T/h (≈6 THz) is a lower bound on an O–H rotor's Vineyard prefactor ...
    eyring = rates.eyring_rate_Hz(0.49, 298.15)
    assert eyring == pytest.approx(6.21e12 * np.exp(-0.49 / (8.617333e-5 * 298.15)), rel=1e-3)
    assert thesis / 10 < eyring < thesis
    # ... and a prefactor of one O–H libration (1000–1400 cm⁻¹) brackets the thesis figure
    lo = rates.harmonic_tst_rate_Hz(0.49, 298.15, 1000 * CM1_HZ)
    hi = rates.harmonic_tst_rate_Hz(0.49, 300.0, 1400 * CM1_HZ)
    assert lo < thesis < hi and hi / lo < 2


def test_vineyard_prefactor_of_one_mode_is_its_frequency():
    nu = np.array([3e13, 5e13, 7e13])
    ts = np.array([3e13, 7e13, 2e13j])  # the 5e13 mode became the reaction coordinate
    assert rates.vineyard_prefactor_Hz(nu, ts) == pytest.approx(5e13)
    with pytest.raises(ValueError, match="exactly one"):
        rates.vineyard_prefactor_Hz(nu, np.array([3e13, 5e13, 7e13]))
    with pytest.raises(ValueError, match="not a minimum"):
        rates.vineyard_prefactor_Hz(ts, ts)


@pytest.fixture(scope="module")
def adatom_hop():
    """Au adatom hopping between hollow sites of Al(100) with EMT (the ASE NEB example), CI-NEB."""
    slab = fcc100("Al", size=(2, 2, 3))
    add_adsorbate(slab, "Au", 1.7, "hollow")
    slab.center(axis=2, vacuum=4.0)
    slab.set_constraint(FixAtoms(mask=[a.tag > 1 for a in slab]))
    initial = slab.copy()
    initial.calc = EMT()
    BFGS(initial, logfile=None).run(fmax=0.01)
    final = initial.copy()
    final[-1].x += final.get_cell()[0, 0] / 2
    final.calc = EMT()
    BFGS(final, logfile=None).run(fmax=0.01)
    images = [initial] + [initial.copy() for _ in range(3)] + [final]
    for im in images[1:-1]:
        im.calc = EMT()
    neb = NEB(images, climb=True, method="improvedtangent")
    neb.interpolate()
    BFGS(neb, logfile=None).run(fmax=0.02, steps=300)
    energies = [im.get_potential_energy() for im in images]
    return initial, images[int(np.argmax(energies))], energies


def test_vineyard_rate_from_ase_vibrations(adatom_hop, tmp_path):
    initial, saddle, energies = adatom_hop
    au = [len(initial) - 1]
    f_min = rates.vibrational_frequencies_Hz(initial, EMT(), tmp_path / "min", indices=au)
    f_ts = rates.vibrational_frequencies_Hz(saddle, EMT(), tmp_path / "ts", indices=au)
    assert np.sum(np.abs(f_ts.imag) > np.abs(f_ts.real)) == 1
    nu_star = rates.vineyard_prefactor_Hz(f_min, f_ts)
    assert 1e11 < nu_star < 1e14  # a surface hop's attempt frequency
    barrier = max(energies) - energies[0]
    assert 0.1 < barrier < 1.0
    k = rates.harmonic_tst_rate_Hz(barrier, 300.0, nu_star)
    assert k == pytest.approx(nu_star * np.exp(-barrier / (8.617333e-5 * 300.0)), rel=1e-4)
    # the reverse hop through the same saddle: populations p ∝ e^{−E/kT}/Πν make K reversible
    p = rates.harmonic_populations([energies[0], energies[-1]], [f_min, f_min], 300.0)
    K = exchange.detailed_balance_rate_matrix(p, {(0, 1): k})
    assert exchange.detailed_balance_violation(K, p) < 1e-12
    assert K[0, 1] == pytest.approx(k, rel=1e-3)  # symmetric hop: equal rates both ways
