"""singlepoint task: real xTB / EMT / pw.x runs, and every failure class raised rather than returned."""
from __future__ import annotations

import errno
import re
import shutil

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import CalculationFailed, CalculatorSetupError

from reactforge.schemas.results import SinglePointResult
from reactforge.schemas.tasks import EMTReference, EspressoReference, SCFFallback, SinglePointSpec, XTBReference
from reactforge.tasks import run_task
from reactforge.tasks.context import TaskContext
from reactforge.tasks.errors import SCFNotConverged, TransientError, UnphysicalResult
from reactforge.tasks.references import ReferenceFailed, ReferenceSetupError, classify_failure, make_calculator
from reactforge.tasks.singlepoint import _check_physical, run

MPI = "mpirun --allow-run-as-root -n 2"
H_PSEUDO = "H.pbe-kjpaw.UPF"
needs_qe = pytest.mark.skipif(shutil.which("pw.x") is None or shutil.which("mpirun") is None,
                              reason="Quantum ESPRESSO pw.x / mpirun not installed")


def _ctx(tmp_path, name="w", launch=""):
    return TaskContext(workdir=tmp_path / name, launch=launch)


def _h2_box() -> Atoms:
    h2 = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], cell=[6.0, 6.0, 6.0], pbc=True)
    h2.center()
    return h2


def _qe_h2(**kw) -> EspressoReference:
    # Low cut-off and loose SCF: a test of the plumbing, not of H2.
    base = dict(pseudopotentials={"H": H_PSEUDO}, ecutwfc_Ry=25.0, kspacing_per_A=None, conv_thr_eV=1e-6)
    base.update(kw)
    return EspressoReference(**base)


# ---------------------------------------------------------------------------- xTB


def test_xtb_molecule_energy_forces_no_stress(tmp_path):
    h2o = molecule("H2O")
    res = run_task(SinglePointSpec(), [h2o], _ctx(tmp_path))
    assert isinstance(res, SinglePointResult)
    assert res.reference == "xtb:GFN2-xTB" and not res.scf_fallback_used
    assert res.energy_eV == pytest.approx(-137.97, abs=0.05)  # GFN2-xTB total energy of water
    f = np.array(res.forces_eV_per_A)
    assert f.shape == (3, 3)
    np.testing.assert_allclose(f.sum(axis=0), 0.0, atol=1e-6)  # no net force on a free molecule
    assert res.stress_eV_per_A3 is None
    assert res.atoms.calc is None and len(res.atoms) == 3
    # the result round-trips through JSON (journal)
    again = SinglePointResult.model_validate_json(res.model_dump_json())
    assert again.energy_eV == res.energy_eV


def test_xtb_forces_match_finite_differences(tmp_path):
    atoms = molecule("CH3OH")
    atoms.rattle(0.05, seed=3)
    spec = SinglePointSpec()
    forces = np.array(run(spec, [atoms], _ctx(tmp_path)).forces_eV_per_A)
    calc = make_calculator(spec.reference, atoms, _ctx(tmp_path))
    h = 1e-3
    for i, k in [(0, 0), (2, 2)]:  # C x, and z of an H
        e = []
        for sign in (1, -1):
            a = atoms.copy()
            a.positions[i, k] += sign * h
            a.calc = calc
            e.append(a.get_potential_energy())
        assert forces[i, k] == pytest.approx(-(e[0] - e[1]) / (2 * h), abs=2e-3)


def test_xtb_periodic_cell_has_stress_consistent_with_strain_derivative(tmp_path):
    si = bulk("Si", "diamond", a=5.3)  # compressed: clearly non-zero stress
    res = run(SinglePointSpec(), [si], _ctx(tmp_path))
    stress = np.array(res.stress_eV_per_A3)
    assert stress.shape == (6,) and abs(stress[0]) > 1e-3
    np.testing.assert_allclose(stress[:3], stress[0], rtol=1e-4)  # cubic symmetry
    # σ_xx = (1/V) dE/dε_xx
    calc = make_calculator(XTBReference(), si, _ctx(tmp_path))
    eps, e = 1e-4, []
    for sign in (1, -1):
        a = si.copy()
        strain = np.eye(3)
        strain[0, 0] += sign * eps
        a.set_cell(si.cell[:] @ strain, scale_atoms=True)
        a.calc = calc
        e.append(a.get_potential_energy())
    assert stress[0] == pytest.approx((e[0] - e[1]) / (2 * eps) / si.get_volume(), rel=2e-2)


def test_xtb_scf_non_convergence_then_fallback(tmp_path):
    ref = XTBReference(max_iterations=2, fallback=SCFFallback(mixing_beta=0.4, max_scf_steps=250))
    spec = SinglePointSpec(reference=ref)
    with pytest.raises(SCFNotConverged):
        run(spec, [molecule("H2O")], _ctx(tmp_path))
    res = run(spec.model_copy(update={"use_fallback": True}), [molecule("H2O")], _ctx(tmp_path))
    assert res.scf_fallback_used
    assert res.energy_eV == pytest.approx(-137.97, abs=0.05)


def test_reference_optimisation_redoes_an_unconverged_scf_with_the_fallback(tmp_path):
    """Multi-step reference tasks (optimisation, NEB) redo a calculation whose SCF did not converge with
    the fallback settings instead of failing the whole task."""
    from reactforge.schemas.tasks import OptimiseSpec
    from reactforge.tasks import optimise
    from reactforge.tasks.references import SCFFallbackCalculator

    ref = XTBReference(max_iterations=2, fallback=SCFFallback(mixing_beta=0.4, max_scf_steps=250))
    water = molecule("H2O")
    water.positions[0] += [0.0, 0.0, 0.05]
    calc = SCFFallbackCalculator(ref, water, _ctx(tmp_path))
    water.calc = calc
    assert water.get_potential_energy() == pytest.approx(-137.97, abs=0.1)
    assert calc.fallback_calls == 1
    res = optimise.run(OptimiseSpec(reference=ref, fmax_eV_per_A=0.05, max_steps=50), [molecule("H2O")],
                       _ctx(tmp_path))
    assert res.converged


def test_reference_task_energies_do_not_depend_on_the_previous_geometry(tmp_path):
    """Each calculation of a multi-step reference task starts from the code's initial guess: the same
    geometry gives the same numbers whatever was calculated before (tblite would restart from the last
    charges; along a quickstart NEB that restart ended 20 eV below the fresh energy)."""
    from reactforge.tasks.references import SCFFallbackCalculator

    ref = XTBReference()
    stretched, water = molecule("H2O"), molecule("H2O")
    stretched.positions[1] *= 1.3
    calc = SCFFallbackCalculator(ref, stretched, _ctx(tmp_path))
    stretched.calc = calc
    stretched.get_potential_energy()
    water.calc = calc
    after = (water.get_potential_energy(), water.get_forces())
    fresh = molecule("H2O")
    fresh.calc = SCFFallbackCalculator(ref, fresh, _ctx(tmp_path))
    # to threading round-off; a restarted SCF differs by ~3e-5 eV/Å in the forces here
    assert after[0] == pytest.approx(fresh.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(after[1], fresh.get_forces(), rtol=0, atol=1e-8)


def test_an_image_whose_fresh_scf_fails_twice_continues_from_its_last_converged_scf(tmp_path):
    """Last resort of a reference NEB image: fresh SCF and fallback both fail, the image's own last
    converged xTB solution is continued; the calculation after it starts fresh again."""
    from reactforge.tasks.references import SCFFallbackCalculator

    ref = XTBReference()
    water = molecule("H2O")
    calc = SCFFallbackCalculator(ref, water, _ctx(tmp_path))
    water.calc = calc
    water.get_potential_energy()
    # from here on neither fresh attempt can converge (GFN2-xTB needs 8 cycles from its guess for water)
    calc.reference = XTBReference(max_iterations=3, fallback=SCFFallback(mixing_beta=0.4, max_scf_steps=3))
    water.positions[1] += [0.0, 0.02, 0.0]
    continued = water.get_potential_energy()
    assert calc.continued_calls == 1 and calc.fallback_calls == 2
    fresh = water.copy()
    fresh.calc = SCFFallbackCalculator(ref, fresh, _ctx(tmp_path))
    assert continued == pytest.approx(fresh.get_potential_energy(), abs=1e-5)
    # the next geometry is fresh again: with a converging spec, no continuation and no fallback
    calc.reference = ref
    water.positions[1] += [0.0, 0.02, 0.0]
    water.get_potential_energy()
    assert calc.continued_calls == 1 and calc.fallback_calls == 2


# ---------------------------------------------------------------------------- EMT and unphysical results


def test_emt_bulk_energy_forces_stress(tmp_path):
    cu = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
    res = run(SinglePointSpec(reference=EMTReference()), [cu], _ctx(tmp_path))
    assert res.reference == "emt"
    np.testing.assert_allclose(res.forces_eV_per_A, 0.0, atol=1e-10)  # perfect lattice
    assert len(res.stress_eV_per_A3) == 6 and res.stress_eV_per_A3[0] > 0  # stretched beyond EMT's 3.59 Å


def test_slab_without_z_periodicity_gets_no_stress(tmp_path):
    from ase.build import fcc111

    slab = fcc111("Cu", size=(2, 2, 3), vacuum=5.0)  # pbc = (True, True, False)
    res = run(SinglePointSpec(reference=EMTReference()), [slab], _ctx(tmp_path))
    assert res.stress_eV_per_A3 is None and len(res.forces_eV_per_A) == 12


def test_atoms_too_close_are_unphysical(tmp_path):
    dimer = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 0.1]], cell=[8, 8, 8], pbc=False)
    with pytest.raises(UnphysicalResult, match="max_force_eV_per_A"):
        run(SinglePointSpec(reference=EMTReference(), max_force_eV_per_A=50.0), [dimer], _ctx(tmp_path))
    # the same structure is accepted when the bound allows it: the bound, not the code, decided
    res = run(SinglePointSpec(reference=EMTReference(), max_force_eV_per_A=1e6), [dimer], _ctx(tmp_path))
    assert np.abs(res.forces_eV_per_A).max() > 50.0


@pytest.mark.parametrize(
    "energy, forces, stress, match",
    [
        (np.nan, np.zeros((2, 3)), None, "energy"),
        (-1.0, np.array([[0.0, np.inf, 0.0], [0.0, 0.0, 0.0]]), None, "forces"),
        (-1.0, np.zeros((2, 3)), np.array([0, 0, np.nan, 0, 0, 0]), "stress"),
        (-1.0, np.zeros((1, 3)), None, "atoms lost"),
    ],
)
def test_unphysical_checks(energy, forces, stress, match):
    with pytest.raises(UnphysicalResult, match=match):
        _check_physical(SinglePointSpec(), 2, energy, forces, stress)


def test_one_structure_only(tmp_path):
    with pytest.raises(ValueError, match="exactly one structure"):
        run(SinglePointSpec(reference=EMTReference()), [bulk("Cu"), bulk("Cu")], _ctx(tmp_path))


def test_spec_validation_names_fields():
    with pytest.raises(Exception, match="max_force_eV_per_A"):
        SinglePointSpec(max_force_eV_per_A=-1)
    with pytest.raises(Exception, match="use_fallbak"):
        SinglePointSpec(use_fallbak=True)
    with pytest.raises(Exception, match="reference_timeout_s"):
        SinglePointSpec(reference_timeout_s=0)


# ---------------------------------------------------------------------------- Quantum ESPRESSO (real pw.x)


@pytest.mark.qe
@needs_qe
def test_qe_h2_single_point_on_two_ranks(tmp_path):
    ctx = _ctx(tmp_path, launch=MPI)
    res = run(SinglePointSpec(reference=_qe_h2()), [_h2_box()], ctx)
    assert res.reference == "espresso:pw.x"
    assert -32.5 < res.energy_eV < -30.5  # PBE H2 at this cut-off: ≈ -31.6 eV
    f = np.array(res.forces_eV_per_A)
    assert f[0, 2] == pytest.approx(-f[1, 2]) and abs(f[0, 2]) > 0.1  # equal and opposite, along the bond
    np.testing.assert_allclose(f[:, :2], 0.0, atol=1e-4)
    assert res.stress_eV_per_A3 is not None and len(res.stress_eV_per_A3) == 6
    out = (ctx.workdir / "espresso.pwo").read_text()
    assert re.search(r"running on\s+2 processors", out)
    assert "convergence has been achieved" in out


@pytest.mark.qe
@needs_qe
def test_qe_scf_non_convergence_then_fallback_settings_on_retry(tmp_path):
    ref = _qe_h2(max_scf_steps=1, mixing_beta=0.7, fallback=SCFFallback(mixing_beta=0.3, max_scf_steps=150))
    spec = SinglePointSpec(reference=ref)
    ctx = _ctx(tmp_path, launch=MPI)
    with pytest.raises(SCFNotConverged):
        run(spec, [_h2_box()], ctx)
    assert "convergence NOT achieved" in (ctx.workdir / "espresso.pwo").read_text()
    # the engine's one retry
    res = run(spec.model_copy(update={"use_fallback": True}), [_h2_box()], ctx)
    assert res.scf_fallback_used
    pwi = (ctx.workdir / "espresso.pwi").read_text()
    assert "mixing_beta      = 0.3" in pwi and "electron_maxstep = 150" in pwi
    assert -32.5 < res.energy_eV < -30.5


@pytest.mark.qe
@needs_qe
def test_qe_timeout_is_transient_and_input_error_is_not(tmp_path):
    with pytest.raises(TransientError, match="timeout"):
        run(SinglePointSpec(reference=_qe_h2(), reference_timeout_s=0.05), [_h2_box()], _ctx(tmp_path, "t", MPI))
    bad = _qe_h2(extra_input={"system": {"not_a_keyword": 1}})
    with pytest.raises(ReferenceFailed, match="not_a_keyword"):
        run(SinglePointSpec(reference=bad), [_h2_box()], _ctx(tmp_path, "b", MPI))


def test_missing_code_is_a_clear_setup_error(tmp_path):
    ref = _qe_h2(executable="pw.x.not-installed")
    with pytest.raises(ReferenceSetupError, match="pw.x.not-installed' not found on PATH"):
        run(SinglePointSpec(reference=ref), [_h2_box()], _ctx(tmp_path, launch=MPI if shutil.which("mpirun") else ""))


@pytest.mark.parametrize(
    "ref, exc, expected",
    [
        (XTBReference(), CalculationFailed("SCF not converged in 2 cycles"), SCFNotConverged),
        (XTBReference(), CalculationFailed("Invalid element"), ReferenceFailed),
        (EMTReference(), CalculatorSetupError("no command"), ReferenceSetupError),
        (EMTReference(), OSError(errno.ESTALE, "Stale file handle"), TransientError),
        (EMTReference(), PermissionError(errno.EACCES, "Permission denied"), ReferenceFailed),
    ],
)
def test_in_process_exceptions_are_classified(tmp_path, ref, exc, expected):
    assert type(classify_failure(ref, tmp_path, exc)) is expected
