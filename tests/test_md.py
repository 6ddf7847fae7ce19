"""reactforge.tasks.md: MLFF MD interrupted at the first per-atom σ > σ_thr (thesis §3.2), with the tiny GAP."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import fcc111
from ase.calculators.calculator import Calculator
from ase.constraints import FixAtoms

from reactforge.schemas.results import MDResult
from reactforge.schemas.tasks import MDSpec
from reactforge.tasks import run_task
from reactforge.tasks.context import TaskContext
from reactforge.tasks.md import run
from reactforge.tasks.mlff import load_mlff


def _slab():
    s = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=8.0)
    s.info["REF_energy"] = 1.0  # a stale label that must not survive into sampled structures
    s.info["config_type"] = "slab"
    return s


def _sigma_of(model, atoms):
    a = atoms.copy()
    a.calc = load_mlff(model)
    a.get_potential_energy()
    return np.asarray(a.calc.results["sigma_per_atom"])


@pytest.fixture
def ctx(tmp_path):
    return TaskContext(workdir=tmp_path)


def test_low_threshold_breaches_on_first_checked_step(tiny_gap_model, ctx):
    slab = _slab()
    spec = MDSpec(model=tiny_gap_model, steps=20, sigma_thr_eV=1e-6)
    result = run(spec, [slab], ctx)
    assert result.breached
    assert result.step_sampled == 0 and result.steps_run == 0
    assert result.trace_steps == [0]
    assert len(result.sigma_trace_eV) == 1 and len(result.sigma_trace_eV[0]) == len(slab)
    # the sampled configuration is the one whose σ breached: recomputing σ gives the trace
    np.testing.assert_allclose(_sigma_of(tiny_gap_model, result.sampled), result.sigma_trace_eV[0], rtol=1e-6)
    assert result.sampled.calc is None
    assert "REF_energy" not in result.sampled.info and result.sampled.info["config_type"] == "slab"


def test_high_threshold_runs_all_steps_and_samples_highest_sigma(tiny_gap_model, ctx):
    spec = MDSpec(model=tiny_gap_model, steps=12, check_every=3, sigma_thr_eV=10.0, temperature_K=600, seed=3)
    result = run(spec, [_slab()], ctx)
    assert not result.breached
    assert result.steps_run == 12
    assert result.trace_steps == [0, 3, 6, 9, 12]
    assert all(len(s) == 12 for s in result.sigma_trace_eV)
    peaks = [max(s) for s in result.sigma_trace_eV]
    assert result.max_sigma_eV == pytest.approx(max(peaks))
    assert result.step_sampled == result.trace_steps[int(np.argmax(peaks))]
    np.testing.assert_allclose(
        _sigma_of(tiny_gap_model, result.sampled).max(), result.max_sigma_eV, rtol=1e-6
    )
    # the trajectory moved: the final frame differs from the start
    assert np.abs(result.final.positions - _slab().positions).max() > 1e-3


def test_threshold_between_peaks_stops_at_first_crossing(tiny_gap_model, ctx):
    base = MDSpec(model=tiny_gap_model, steps=10, sigma_thr_eV=10.0, temperature_K=1500, seed=5)
    free = run(base, [_slab()], ctx)
    peaks = np.array([max(s) for s in free.sigma_trace_eV])
    if peaks.max() - peaks[0] < 1e-6:
        pytest.skip("σ did not change along this short trajectory")
    thr = 0.5 * (peaks[0] + peaks.max())
    first = int(np.argmax(peaks > thr))
    stopped = run(base.model_copy(update={"sigma_thr_eV": thr}), [_slab()], ctx)
    assert stopped.breached
    assert stopped.step_sampled == free.trace_steps[first] == stopped.steps_run
    np.testing.assert_allclose(stopped.sigma_trace_eV, free.sigma_trace_eV[: first + 1])


def test_same_seed_reproduces_and_other_seed_differs(tiny_gap_model, ctx):
    spec = MDSpec(model=tiny_gap_model, steps=5, sigma_thr_eV=10.0, seed=11)
    a = run(spec, [_slab()], ctx)
    b = run(spec, [_slab()], ctx)
    c = run(spec.model_copy(update={"seed": 12}), [_slab()], ctx)
    np.testing.assert_array_equal(a.final.positions, b.final.positions)
    assert a.sigma_trace_eV == b.sigma_trace_eV
    assert np.abs(a.final.positions - c.final.positions).max() > 1e-6


def test_fixed_atoms_do_not_move_and_nve_runs(tiny_gap_model, ctx):
    slab = _slab()
    bottom = [a.index for a in slab if a.tag == 3]
    spec = MDSpec(model=tiny_gap_model, ensemble="nve", steps=6, sigma_thr_eV=10.0, fixed_atoms=bottom)
    result = run(spec, [slab], ctx)
    np.testing.assert_allclose(result.final.positions[bottom], slab.positions[bottom], atol=1e-12)
    assert np.abs(result.final.positions - slab.positions).max() > 1e-4
    assert any(isinstance(c, FixAtoms) for c in result.final.constraints)


def test_far_from_training_data_breaches_inside_does_not(tiny_gap_model, ctx):
    """σ_thr = 50 meV (thesis): the equilibrium slab runs through, a strongly compressed one is stopped."""
    inside = run(MDSpec(model=tiny_gap_model, steps=10), [_slab()], ctx)
    squeezed = _slab()
    squeezed.set_cell(squeezed.cell * 0.72, scale_atoms=True)
    outside = run(MDSpec(model=tiny_gap_model, steps=10), [squeezed], ctx)
    assert not inside.breached and inside.max_sigma_eV < 0.05
    assert outside.breached and outside.max_sigma_eV > 0.05


def test_nan_energies_return_last_finite_configuration(tiny_gap_model, ctx, monkeypatch):
    """An MLFF whose energy turns NaN mid-run: the last finite configuration is sampled, as a breach."""
    import reactforge.tasks.md as md

    real = md.load_mlff

    class GoesNaN(Calculator):
        implemented_properties = ["energy", "free_energy", "forces", "sigma_per_atom"]

        def __init__(self):
            super().__init__()
            self.inner, self.calls = real(tiny_gap_model), 0

        def calculate(self, atoms=None, properties=("energy",), system_changes=()):
            super().calculate(atoms, properties, system_changes)
            a = self.atoms.copy()
            a.calc = self.inner
            self.calls += 1
            bad = self.calls > 3
            self.results = {
                "energy": np.nan if bad else a.get_potential_energy(),
                "forces": a.get_forces() * (np.nan if bad else 1.0),
                "sigma_per_atom": self.inner.results["sigma_per_atom"],
            }

    monkeypatch.setattr(md, "load_mlff", lambda ref, device="cpu": GoesNaN())
    result = run(MDSpec(model=tiny_gap_model, steps=10, sigma_thr_eV=10.0), [_slab()], ctx)
    assert result.breached
    assert result.step_sampled == 2  # evaluations 1-3 are steps 0-2
    assert np.isfinite(result.sampled.positions).all()


def test_through_dispatch_and_json_round_trip(tiny_gap_model, ctx):
    spec = MDSpec(model=tiny_gap_model, steps=2, sigma_thr_eV=10.0)
    result = run_task(spec, [_slab()], ctx)
    again = MDResult.model_validate_json(result.model_dump_json())
    np.testing.assert_allclose(again.sampled.positions, result.sampled.positions, atol=1e-6)
    assert again.trace_steps == [0, 1, 2]


def test_bad_input_is_refused(tiny_gap_model, ctx):
    with pytest.raises(ValueError, match="exactly one"):
        run(MDSpec(model=tiny_gap_model, steps=1), [_slab(), _slab()], ctx)
    with pytest.raises(ValueError, match="fixed_atoms"):
        run(MDSpec(model=tiny_gap_model, steps=1, fixed_atoms=[99]), [_slab()], ctx)
    with pytest.raises(ValueError, match="sigma_thr_eV"):
        MDSpec(model=tiny_gap_model, sigma_thr_eV=-1.0)
