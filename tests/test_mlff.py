"""reactforge.tasks.mlff: the MLFF calculators and their per-atom σ, checked against the libraries' own outputs."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones

from reactforge.tasks.mlff import CommitteeCalculator, load_mlff, sigma_per_atom


def _cu_bulk(seed: int = 3):
    a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    a.rattle(0.05, seed=seed)
    return a


def test_gap_sigma_is_sqrt_of_quippy_local_variance(tiny_gap_model):
    from quippy.potential import Potential

    atoms = _cu_bulk()
    atoms.set_cell(atoms.cell * 0.9, scale_atoms=True)
    calc = load_mlff(tiny_gap_model)
    a = atoms.copy()
    a.calc = calc
    energy, forces, stress = a.get_potential_energy(), a.get_forces(), a.get_stress()

    # independent evaluation with a plain quippy Potential asking for the variance array
    pot = Potential(param_filename=tiny_gap_model.paths[0], calc_args="local_gap_variance=var_check")
    b = atoms.copy()
    b.calc = pot
    assert b.get_potential_energy() == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(b.get_forces(), forces, atol=1e-9)
    np.testing.assert_allclose(b.get_stress(), stress, atol=1e-9)
    var = np.asarray(pot.extra_results["atoms"]["var_check"])  # eV² per atom
    np.testing.assert_allclose(calc.results["sigma_per_atom"], np.sqrt(var), rtol=1e-10)
    assert calc.results["energies"].sum() == pytest.approx(energy, abs=1e-8)


def test_gap_sigma_follows_the_structure_in_md_like_updates(tiny_gap_model):
    """σ is recomputed when positions change (no stale results between steps)."""
    calc = load_mlff(tiny_gap_model)
    a = _cu_bulk()
    a.calc = calc
    a.get_potential_energy()
    before = calc.results["sigma_per_atom"].copy()
    a.positions[0] += [0.5, 0.0, 0.0]
    a.get_forces()
    after = calc.results["sigma_per_atom"]
    assert after[0] > before[0]


def test_gap_computes_the_virial_only_when_asked_and_the_forces_do_not_depend_on_it(tiny_gap_model):
    calc = load_mlff(tiny_gap_model)
    a = _cu_bulk()
    a.calc = calc
    energy, forces = a.get_potential_energy(), a.get_forces().copy()
    assert "stress" not in calc.results  # an NEB or MD step pays for energy and forces only
    stress = a.get_stress()
    assert calc.results["energy"] == energy and np.array_equal(calc.results["forces"], forces)
    assert np.abs(stress).max() > 0


def test_gap_works_on_slabs_and_molecules_without_stress(tiny_gap_model):
    calc = load_mlff(tiny_gap_model)
    slab = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=8.0)
    sigma = sigma_per_atom(calc, slab)
    assert sigma.shape == (12,) and "stress" not in calc.results
    from ase import Atoms

    dimer = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]])  # no cell at all
    assert sigma_per_atom(calc, dimer).shape == (2,)


def test_committee_sigma_is_std_of_local_energies():
    """Two real calculators with per-atom energies: σ_i = |E_i^EMT − E_i^LJ| / 2 (population std)."""
    atoms = _cu_bulk()
    members = [EMT(), LennardJones(sigma=2.3, epsilon=0.4, rc=5.0, smooth=True)]
    local = []
    for m in members:
        a = atoms.copy()
        a.calc = m
        a.get_potential_energy()
        local.append(a.get_potential_energies())
    committee = CommitteeCalculator(members)
    sigma = sigma_per_atom(committee, atoms)
    np.testing.assert_allclose(sigma, np.abs(local[0] - local[1]) / 2, rtol=1e-10)
    assert committee.results["energy"] == pytest.approx(np.mean([l.sum() for l in local]))

    forces_mode = CommitteeCalculator(members, uncertainty="forces")
    f = []
    for m in members:
        a = atoms.copy()
        a.calc = m
        f.append(a.get_forces())
    # per atom: RMS over x, y, z of the component std (eV/Å)
    expected = np.sqrt((((f[0] - f[1]) / 2) ** 2).mean(axis=1))
    np.testing.assert_allclose(sigma_per_atom(forces_mode, atoms), expected, rtol=1e-10)

    single = CommitteeCalculator([EMT()])
    assert np.all(sigma_per_atom(single, atoms) == 0.0)


def test_mace_committee_sigma_matches_members(tiny_mace_fit):
    """σ from load_mlff equals the spread of the members' own per-atom energies (mace 0.3.16 keys)."""
    from mace.calculators import MACECalculator

    ref = tiny_mace_fit.model
    atoms = _cu_bulk(seed=5)
    local, node = [], []
    for p in ref.paths:
        a = atoms.copy()
        a.calc = MACECalculator(model_paths=p, device="cpu", default_dtype="float64")
        energy = a.get_potential_energy()
        # "energies" sums to the total energy; "node_energy" has the E0s taken off
        assert a.calc.results["energies"].sum() == pytest.approx(energy, abs=1e-6)
        np.testing.assert_allclose(
            a.calc.results["energies"] - a.calc.results["node_energy"], tiny_mace_fit.e0_eV["Cu"], atol=1e-8
        )
        local.append(a.calc.results["energies"])
    calc = load_mlff(ref)
    sigma = sigma_per_atom(calc, atoms)
    np.testing.assert_allclose(sigma, np.std(local, axis=0), rtol=1e-8, atol=1e-12)
    assert np.all(np.isfinite(sigma)) and np.all(sigma > 0)
    assert calc.results["energy"] == pytest.approx(np.mean([l.sum() for l in local]), abs=1e-6)


def test_gap_model_loads_from_any_working_directory(tiny_gap_model, tmp_path, monkeypatch):
    """The xml names its sparse-point files relative to itself; loading it from another working
    directory (an MD task's workdir) still finds them."""
    monkeypatch.chdir(tmp_path)
    sigma = sigma_per_atom(load_mlff(tiny_gap_model), _cu_bulk())
    assert sigma.shape == (32,) and np.all(np.isfinite(sigma))
