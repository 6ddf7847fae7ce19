"""Umbrella integration and MBAR against a 2-D potential whose A(ξ) is known in closed form
(tests/free_energy_model.py): double well along ξ, transverse mode four times softer at the top."""
from __future__ import annotations

import numpy as np
import pytest
from ase import units

from free_energy_model import (
    A_A,
    C_A,
    H_EV,
    exact_barrier,
    exact_free_energy,
    exact_window_samples,
    langevin_window,
    model_system,
)
from reactforge.workflows.free_energy_analysis import Window, forward_barrier, mbar_profile, umbrella_integration

SPRING = 75.0  # eV/Å², the thesis's
CENTRES = np.linspace(C_A - A_A - 0.2, C_A + A_A + 0.2, 32)  # the thesis's 32 windows


def exact_windows(temperature_K: float, n: int, seed: int = 0, direction: int = 1) -> list[Window]:
    rng = np.random.default_rng(seed)
    centres = CENTRES if direction > 0 else CENTRES[::-1]
    return [Window(c, SPRING, exact_window_samples(c, SPRING, temperature_K, n, rng)) for c in centres]


def test_model_forces_are_the_gradient():
    atoms = model_system(1.9)
    atoms.positions[2, 1] = 0.15
    forces = atoms.get_forces(apply_constraint=False)
    for i, k in ((0, 0), (1, 0), (2, 1)):
        p = atoms.positions.copy()
        e = []
        for h in (1e-5, -1e-5):
            q = p.copy()
            q[i, k] += h
            atoms.set_positions(q, apply_constraint=False)
            e.append(atoms.get_potential_energy())
        atoms.set_positions(p, apply_constraint=False)
        assert forces[i, k] == pytest.approx(-(e[0] - e[1]) / 2e-5, abs=1e-5)


def test_forward_barrier_follows_the_band_direction():
    A = np.array([0.0, 0.3, 0.1, 0.5, -0.4])
    assert forward_barrier(A, 1) == (0.5, 0, 3)
    assert forward_barrier(A, -1) == pytest.approx((0.9, 4, 3))  # from the far end: −0.4 up to 0.5


def test_an_early_barrier_on_a_downhill_reaction_is_split_at_the_band_top():
    # A(ξ) of a strongly exothermic step (the quickstart's heterolytic split): the top comes early, so
    # the middle of the range is already on the product side, below the reactant
    A = np.array([0.65, 0.81, 0.6, 0.3, 0.0, -0.2, -0.3, -0.33])
    assert forward_barrier(A, 1)[0] == 0.0  # halves: "reactant" at index 3, downhill from there
    assert forward_barrier(A, 1, split=1) == pytest.approx((0.16, 0, 1))  # divided at the band's top
    assert forward_barrier(A[::-1], -1, split=6) == pytest.approx((0.16, 7, 6))


@pytest.fixture(scope="module")
def profiles_300K():
    windows = exact_windows(300.0, 3000)
    ui = umbrella_integration(windows, 300.0)
    return ui, mbar_profile(windows, 300.0, guess=ui)


def test_ui_and_mbar_recover_the_exact_barrier(profiles_300K):
    ui, mbar = profiles_300K
    exact = exact_barrier(300.0)
    assert exact == pytest.approx(H_EV - 0.5 * units.kB * 300 * np.log(4), abs=2e-3)  # the model's own check
    assert abs(ui.barrier_eV - exact) < 0.005
    assert abs(mbar.barrier_eV - exact) < 0.005
    # each other within their error bars, and the error bars neither zero nor wide
    assert abs(ui.barrier_eV - mbar.barrier_eV) <= ui.error_eV + mbar.error_eV
    for p in (ui, mbar):
        assert 0.0005 < p.error_eV < 0.005
        assert abs(p.barrier_eV - exact) < 4 * p.error_eV
        assert p.xi_minimum == pytest.approx(C_A - A_A, abs=0.03)
        assert p.xi_barrier == pytest.approx(C_A, abs=0.03)


def test_ui_profile_follows_the_exact_free_energy(profiles_300K):
    ui, _ = profiles_300K
    exact = exact_free_energy(ui.xi, 300.0)
    exact -= exact[np.argmin(np.abs(ui.xi - ui.xi_minimum))]
    assert ui.A_eV[np.argmin(np.abs(ui.xi - ui.xi_minimum))] == 0.0
    assert np.max(np.abs(ui.A_eV - exact)) < 0.01
    # the block errors describe the deviation: most of the profile within 3σ
    assert np.mean(np.abs(ui.A_eV - exact) <= 3 * ui.sigma_eV + 1e-4) > 0.9


def test_barrier_approaches_the_band_barrier_as_temperature_falls():
    barriers = {T: umbrella_integration(exact_windows(T, 3000, seed=int(T)), T).barrier_eV for T in (500, 300, 100, 20)}
    assert barriers[500] < barriers[300] < barriers[100] < barriers[20]
    assert abs(barriers[20] - H_EV) < 0.003
    assert H_EV - barriers[300] > 0.01  # the transverse entropy is seen at room temperature
    for T, b in barriers.items():
        assert b == pytest.approx(exact_barrier(T), abs=0.005)


def test_a_band_walked_backwards_reports_the_barrier_from_its_own_start():
    ui = umbrella_integration(exact_windows(300.0, 2000, direction=-1), 300.0, direction=-1)
    assert ui.xi_minimum == pytest.approx(C_A + A_A, abs=0.03)  # the well at large ξ is now the reactant
    assert abs(ui.barrier_eV - exact_barrier(300.0)) < 0.006


def test_too_few_samples_for_the_blocks_is_refused():
    with pytest.raises(ValueError, match="too few"):
        umbrella_integration(exact_windows(300.0, 10), 300.0, n_blocks=8)


def test_langevin_window_samples_the_exact_biased_distribution():
    """The MD of a window (ASE Langevin + the umbrella task's restraint) on the model samples ξ from
    exp(−β(A + w)): mean and variance as the closed form says."""
    centre, T = C_A - 0.1, 300.0
    xi = langevin_window(centre, SPRING, T, steps=2700, equilibration=300, seed=3)
    exact = exact_window_samples(centre, SPRING, T, 400_000, np.random.default_rng(0))
    assert np.mean(xi) == pytest.approx(exact.mean(), abs=0.004)  # σ/√N_eff ≈ 0.001 Å
    assert np.var(xi) == pytest.approx(exact.var(), rel=0.2)


@pytest.mark.slow
def test_umbrella_sampling_by_md_recovers_the_exact_barrier():
    """The whole chain on MD samples (24 windows × 12 ps, ~6 min): within 5 meV, UI and MBAR within their
    error bars of each other (benchmarks/free_energy.py runs the same and records it)."""
    centres = np.linspace(C_A - A_A - 0.2, C_A + A_A + 0.2, 24)
    windows = [Window(c, SPRING, langevin_window(c, SPRING, 300.0, steps=12000, equilibration=1000, seed=k))
               for k, c in enumerate(centres)]
    ui = umbrella_integration(windows, 300.0)
    mbar = mbar_profile(windows, 300.0, guess=ui)
    exact = exact_barrier(300.0)
    assert abs(ui.barrier_eV - exact) < 0.005 and abs(mbar.barrier_eV - exact) < 0.005
    assert abs(ui.barrier_eV - mbar.barrier_eV) <= ui.error_eV + mbar.error_eV
