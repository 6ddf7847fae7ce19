"""reactforge.tasks.umbrella: one umbrella window, MD under a two-sided harmonic restraint on d(i, j)."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import add_adsorbate, fcc111
from ase.calculators.emt import EMT
from pydantic import ValidationError

from reactforge.schemas.results import UmbrellaWindowResult
from reactforge.schemas.tasks import UmbrellaWindowSpec
from reactforge.tasks.context import TaskContext
from reactforge.tasks.umbrella import DistanceDifferenceRestraint, DistanceRestraint, run

ADATOM, SURFACE = 12, 8  # adatom and one of the three top-layer atoms under its fcc hollow


def _adatom_slab():
    s = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=8.0)
    add_adsorbate(s, "Cu", 2.0, "fcc")
    return s


def test_restraint_energy_and_forces_are_consistent():
    """Two-sided bias k/2 (d − d0)², with forces the exact negative gradient (finite differences)."""
    atoms = _adatom_slab()
    atoms.rattle(0.05, seed=1)
    d = atoms.get_distance(ADATOM, SURFACE, mic=True)
    for centre in (d - 0.3, d + 0.3):  # restrained from both sides
        r = DistanceRestraint(ADATOM, SURFACE, centre, 75.0)
        assert r.adjust_potential_energy(atoms) == pytest.approx(0.5 * 75.0 * 0.09)
        atoms.set_constraint(r)
        atoms.calc = EMT()
        forces = atoms.get_forces()
        h = 1e-5
        for i in (ADATOM, SURFACE):
            for k in range(3):
                p = atoms.positions.copy()
                p[i, k] += h
                atoms.set_positions(p, apply_constraint=False)
                ep = atoms.get_potential_energy()
                p[i, k] -= 2 * h
                atoms.set_positions(p, apply_constraint=False)
                em = atoms.get_potential_energy()
                p[i, k] += h
                atoms.set_positions(p, apply_constraint=False)
                assert forces[i, k] == pytest.approx(-(ep - em) / (2 * h), abs=1e-4)
        atoms.set_constraint()


def test_distance_difference_restraint_forces_are_the_gradient():
    """ξ = d(i, j) − d(j, k) (atom j between i and k): forces the exact negative gradient of the bias."""
    atoms = _adatom_slab()
    atoms.rattle(0.05, seed=2)
    i, j, k = SURFACE, ADATOM, 9
    xi = atoms.get_distance(i, j, mic=True) - atoms.get_distance(j, k, mic=True)
    r = DistanceDifferenceRestraint(i, j, k, xi + 0.2, 75.0)
    assert r.value(atoms) == pytest.approx(xi)
    assert r.adjust_potential_energy(atoms) == pytest.approx(0.5 * 75.0 * 0.04)
    forces = np.zeros((len(atoms), 3))
    r.adjust_forces(atoms, forces)
    h = 1e-6
    for a in (i, j, k, 0):
        for c in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, c] += h
            minus.positions[a, c] -= h
            grad = (r.adjust_potential_energy(plus) - r.adjust_potential_energy(minus)) / (2 * h)
            assert forces[a, c] == pytest.approx(-grad, abs=1e-5)


@pytest.fixture(scope="module")
def windows(tiny_gap_model, tmp_path_factory):
    ctx = TaskContext(workdir=tmp_path_factory.mktemp("umbrella"))
    start = _adatom_slab()
    d0 = start.get_distance(ADATOM, SURFACE, mic=True)
    out = {}
    for shift in (-0.1, 0.1):
        spec = UmbrellaWindowSpec(
            model=tiny_gap_model, atom_i=ADATOM, atom_j=SURFACE, centre_A=d0 + shift, spring_eV_per_A2=75.0,
            equilibration_steps=20, production_steps=60, sample_every=2, friction_per_fs=0.05,
            fixed_atoms=[a.index for a in start if a.tag == 3], seed=7,
        )
        out[shift] = (spec, run(spec, [start], ctx))
    return start, out


def test_stiff_spring_holds_the_cv_at_the_centre(windows):
    _, out = windows
    for spec, result in out.values():
        assert len(result.cv_A) == spec.production_steps // spec.sample_every
        assert result.sample_interval_fs == pytest.approx(2.0)
        assert np.mean(result.cv_A) == pytest.approx(spec.centre_A, abs=0.05)
        assert np.std(result.cv_A) < 0.1  # kT/k at 300 K: ≈ 0.02 Å
        assert result.centre_A == spec.centre_A and result.spring_eV_per_A2 == 75.0
        assert result.max_sigma_eV is not None and result.max_sigma_eV > 0


def test_moving_the_centre_moves_the_cv(windows):
    _, out = windows
    low, high = np.mean(out[-0.1][1].cv_A), np.mean(out[0.1][1].cv_A)
    assert high - low > 0.12


def test_final_structure_keeps_fixed_atoms_and_drops_the_restraint(windows):
    start, out = windows
    spec, result = out[0.1]
    assert not any(isinstance(c, DistanceRestraint) for c in result.final.constraints)
    np.testing.assert_allclose(result.final.positions[spec.fixed_atoms], start.positions[spec.fixed_atoms])
    again = UmbrellaWindowResult.model_validate_json(result.model_dump_json())
    assert again.cv_A == result.cv_A


def test_bad_input_is_refused(tiny_gap_model, tmp_path):
    with pytest.raises(ValidationError, match="different"):
        UmbrellaWindowSpec(model=tiny_gap_model, atom_i=3, atom_j=3, centre_A=2.0)
    with pytest.raises(ValidationError, match="centre_A"):
        UmbrellaWindowSpec(model=tiny_gap_model, atom_i=3, atom_j=4, centre_A=-2.0)
    spec = UmbrellaWindowSpec(model=tiny_gap_model, atom_i=3, atom_j=40, centre_A=2.0)
    with pytest.raises(ValueError, match="atom_j"):
        run(spec, [_adatom_slab()], TaskContext(workdir=tmp_path))


def test_frames_above_sigma_thr_are_returned_and_stop_the_window(tiny_gap_model, tmp_path):
    start = _adatom_slab()
    d0 = start.get_distance(ADATOM, SURFACE, mic=True)
    common = dict(model=tiny_gap_model, atom_i=ADATOM, atom_j=SURFACE, centre_A=d0, equilibration_steps=5,
                  production_steps=60, friction_per_fs=0.05, fixed_atoms=[a.index for a in start if a.tag == 3])
    # σ of this model on the slab is ~1 meV: every frame is above 1 μeV, none above 1 eV
    low = run(UmbrellaWindowSpec(**common, sigma_thr_eV=1e-6, max_breaching_frames=2, breach_spacing_steps=10),
              [start], TaskContext(workdir=tmp_path / "low"))
    assert low.breached and len(low.breaching) == 2
    assert low.steps_run == 5 + 1 + 10  # the first production step, then one spacing later: stopped there
    assert len(low.cv_A) == 11
    assert not np.allclose(low.breaching[0].positions, low.breaching[1].positions)
    assert len(low.breaching[0]) == len(start) and low.breaching[0].constraints  # FixAtoms kept, to label
    high = run(UmbrellaWindowSpec(**common, sigma_thr_eV=1.0), [start], TaskContext(workdir=tmp_path / "high"))
    assert not high.breached and high.breaching == [] and high.steps_run == 65 and len(high.cv_A) == 60


def test_distance_difference_window_is_held_at_its_centre(tiny_gap_model, tmp_path):
    start = _adatom_slab()
    xi0 = start.get_distance(SURFACE, ADATOM, mic=True) - start.get_distance(ADATOM, 9, mic=True)
    spec = UmbrellaWindowSpec(model=tiny_gap_model, cv="distance_difference", atom_i=SURFACE, atom_j=ADATOM,
                              atom_k=9, centre_A=xi0 - 0.1, equilibration_steps=20, production_steps=40,
                              friction_per_fs=0.05, fixed_atoms=[a.index for a in start if a.tag == 3], seed=3)
    result = run(spec, [start], TaskContext(workdir=tmp_path))
    assert np.mean(result.cv_A) == pytest.approx(xi0 - 0.1, abs=0.05)
    with pytest.raises(ValidationError, match="atom_k"):
        UmbrellaWindowSpec(model=tiny_gap_model, cv="distance_difference", atom_i=1, atom_j=2, centre_A=-0.3)
