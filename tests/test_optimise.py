"""reactforge.tasks.optimise: MLFF relaxation with ASE optimisers, FixAtoms and σ along the trajectory."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import fcc111

from reactforge.schemas.tasks import OptimiseSpec
from reactforge.tasks.context import TaskContext
from reactforge.tasks.mlff import load_mlff
from reactforge.tasks.optimise import run


def _rattled_slab():
    s = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=8.0)
    s.rattle(0.08, seed=4)
    return s


def _fmax(model, atoms, fixed):
    a = atoms.copy()
    a.calc = load_mlff(model)
    f = a.get_forces()
    f[fixed] = 0.0
    return np.linalg.norm(f, axis=1).max()


@pytest.mark.parametrize("optimizer", ["BFGS", "FIRE", "LBFGS"])
def test_relaxes_below_fmax_and_keeps_fixed_atoms(tiny_gap_model, tmp_path, optimizer):
    slab = _rattled_slab()
    bottom = [a.index for a in slab if a.tag == 3]
    assert _fmax(tiny_gap_model, slab, bottom) > 0.2
    spec = OptimiseSpec(model=tiny_gap_model, fmax_eV_per_A=0.02, optimizer=optimizer, fixed_atoms=bottom)
    result = run(spec, [slab], TaskContext(workdir=tmp_path))

    assert result.converged and result.steps > 0
    assert result.fmax_eV_per_A < 0.02
    assert _fmax(tiny_gap_model, result.final, bottom) == pytest.approx(result.fmax_eV_per_A, abs=1e-9)
    np.testing.assert_allclose(result.final.positions[bottom], slab.positions[bottom], atol=1e-12)
    assert result.energies_eV[-1] < result.energies_eV[0]
    assert result.energy_eV == pytest.approx(result.energies_eV[-1])
    assert 0 < result.max_sigma_eV < 0.05
    assert result.final.calc is None


def test_step_limit_reports_not_converged(tiny_gap_model, tmp_path):
    spec = OptimiseSpec(model=tiny_gap_model, fmax_eV_per_A=1e-4, max_steps=3)
    result = run(spec, [_rattled_slab()], TaskContext(workdir=tmp_path))
    assert not result.converged
    assert result.steps == 3 and len(result.energies_eV) == 4  # start + 3 steps
    assert result.fmax_eV_per_A > 1e-4


def test_stop_on_breach(tiny_gap_model, tmp_path):
    squeezed = _rattled_slab()
    squeezed.set_cell(squeezed.cell * 0.75, scale_atoms=True)
    ctx = TaskContext(workdir=tmp_path)
    stopped = run(OptimiseSpec(model=tiny_gap_model, stop_on_breach=True, sigma_thr_eV=0.05), [squeezed], ctx)
    assert stopped.breached and not stopped.converged and stopped.steps == 0
    assert stopped.max_sigma_eV > 0.05
    reported = run(OptimiseSpec(model=tiny_gap_model, max_steps=2, sigma_thr_eV=0.05), [squeezed], ctx)
    assert not reported.breached and reported.steps == 2


def test_reference_relaxation_with_emt(tmp_path):
    """The validation relaxes reaction endpoints on the reference: same task, a reference instead of a model."""
    from ase.calculators.emt import EMT

    from reactforge.schemas.tasks import EMTReference

    slab = _rattled_slab()
    bottom = [a.index for a in slab if a.tag == 3]
    spec = OptimiseSpec(reference=EMTReference(), fmax_eV_per_A=0.02, fixed_atoms=bottom)
    result = run(spec, [slab], TaskContext(workdir=tmp_path))
    assert result.converged and result.fmax_eV_per_A < 0.02
    a = result.final.copy()
    a.calc = EMT()
    f = a.get_forces()
    f[bottom] = 0.0
    assert np.linalg.norm(f, axis=1).max() < 0.02
    assert result.max_sigma_eV == 0.0  # a reference has no σ


def test_optimise_needs_exactly_one_potential(tiny_gap_model):
    from pydantic import ValidationError

    from reactforge.schemas.tasks import EMTReference

    with pytest.raises(ValidationError, match="exactly one"):
        OptimiseSpec()
    with pytest.raises(ValidationError, match="exactly one"):
        OptimiseSpec(model=tiny_gap_model, reference=EMTReference())
