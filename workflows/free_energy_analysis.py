"""Free energy A(ξ) from umbrella windows: umbrella integration (Kästner & Thiel, J. Chem. Phys. 123,
144104 (2005)) with block-averaged errors, and MBAR (pymbar) on the same samples as a cross-check.

Every window i has a harmonic bias w_i(ξ) = K_i/2 (ξ − ξ_i)². Umbrella integration approximates each
window's biased distribution by a normal one (mean ξ̄_i, variance σ_i²), so its unbiased mean force is

    ∂A_i/∂ξ = kT (ξ − ξ̄_i)/σ_i² − K_i (ξ − ξ_i),

and the windows are mixed with weights p_i(ξ) = N_i P_i(ξ) / Σ_j N_j P_j(ξ) before integrating over ξ.
The statistical error comes from block averaging: each window's series is cut into B consecutive
blocks, the profile is integrated from block b of every window, and the spread of the B profiles
(and barriers) over √B is the error. Blocks must be longer than the CV's correlation time.

ΔA‡ is the forward barrier along the band (`forward_barrier`): walking ξ the way the band goes from
its initial to its final state, the highest A between the reactant and product minima minus A at the
reactant minimum, where A is zero.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from ase import units
from scipy.integrate import cumulative_trapezoid


@dataclass(frozen=True)
class Window:
    """The production CV samples of one umbrella window (ξ in Å, spring in eV/Å²)."""

    centre: float
    spring: float
    samples: np.ndarray


@dataclass(frozen=True)
class Profile:
    """A(ξ) on a grid, zero at the reactant minimum, with its statistical error; the forward barrier."""

    xi: np.ndarray
    A_eV: np.ndarray
    sigma_eV: np.ndarray
    barrier_eV: float
    error_eV: float
    xi_minimum: float
    xi_barrier: float


def forward_barrier(A: np.ndarray, direction: int = 1, split: int | None = None) -> tuple[float, int, int]:
    """(ΔA‡, index of the reactant minimum, index of the top) along the band's direction (+1: ξ grows
    from initial to final state, −1: it shrinks). The reactant and product minima are the lowest A
    before and after `split` (the grid index where the basins divide: the band's highest image; default
    the middle of the range); the top is the highest A between them, so the walls beyond the band's
    ends, which the outer windows sample, are no barrier. An early barrier on a downhill reaction needs
    the split: the middle of the range then lies on the product side, below the reactant."""
    order = np.arange(len(A)) if direction >= 0 else np.arange(len(A))[::-1]
    a = np.asarray(A, float)[order]
    half = len(a) // 2 if split is None else int(np.clip(np.where(order == split)[0][0], 1, len(a) - 1))
    low = int(np.nanargmin(a[:half]))
    product = half + int(np.nanargmin(a[half:]))
    top = low + int(np.nanargmax(a[low:product + 1]))
    return float(a[top] - a[low]), int(order[low]), int(order[top])


def split_index(xi: np.ndarray, divide: float | None) -> int | None:
    """The grid index nearest ξ = `divide` (None: no divide given)."""
    return None if divide is None else int(np.argmin(np.abs(np.asarray(xi) - divide)))


def _profile(xi: np.ndarray, A: np.ndarray, direction: int, divide: float | None) -> tuple[np.ndarray, float, int, int]:
    barrier, low, top = forward_barrier(A, direction, split_index(xi, divide))
    return A - A[low], barrier, low, top


def ui_mean_force(xi: np.ndarray, means, variances, centres, springs, counts, kT: float) -> np.ndarray:
    """dA/dξ on `xi` from the windows' normal approximations (Kästner & Thiel 2005, eqs. 7-8)."""
    xi = np.asarray(xi)[:, None]
    means, var = np.asarray(means)[None], np.asarray(variances)[None]
    # log-weights for a stable normalisation far in the tails of every window
    logp = np.log(np.asarray(counts))[None] - 0.5 * (xi - means) ** 2 / var - 0.5 * np.log(2 * np.pi * var)
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    force = kT * (xi - means) / var - np.asarray(springs)[None] * (xi - np.asarray(centres)[None])
    return (p * force).sum(axis=1)


def _integrate(xi, windows: list[Window], series: list[np.ndarray], kT: float) -> np.ndarray:
    means = [s.mean() for s in series]
    variances = [s.var(ddof=1) for s in series]
    dA = ui_mean_force(xi, means, variances, [w.centre for w in windows], [w.spring for w in windows],
                       [len(s) for s in series], kT)
    return cumulative_trapezoid(dA, xi, initial=0.0)


def umbrella_integration(windows: list[Window], temperature_K: float, *, n_blocks: int = 8,
                         n_grid: int = 500, direction: int = 1, divide: float | None = None) -> Profile:
    """A(ξ) between the lowest and highest window mean, with block-averaged errors; `divide` is the ξ
    between reactant and product basins (forward_barrier)."""
    if len(windows) < 2:
        raise ValueError("umbrella integration needs at least two windows")
    kT = units.kB * temperature_K
    shortest = min(len(w.samples) for w in windows)
    if shortest < 2 * n_blocks:
        raise ValueError(f"a window has {shortest} samples: too few for {n_blocks} blocks")
    means = [np.mean(w.samples) for w in windows]
    xi = np.linspace(min(means), max(means), n_grid)
    A, barrier, low, top = _profile(xi, _integrate(xi, windows, [np.asarray(w.samples) for w in windows], kT),
                                    direction, divide)
    blocks, barriers = [], []
    for b in range(n_blocks):
        part = [np.array_split(np.asarray(w.samples), n_blocks)[b] for w in windows]
        Ab = _integrate(xi, windows, part, kT)
        blocks.append(Ab - Ab[low])  # every block's profile referred to the same ξ as the full one
        barriers.append(forward_barrier(Ab, direction, split_index(xi, divide))[0])
    sigma = np.std(blocks, axis=0, ddof=1) / np.sqrt(n_blocks)
    error = float(np.std(barriers, ddof=1) / np.sqrt(n_blocks))
    return Profile(xi, A, sigma, barrier, error, float(xi[low]), float(xi[top]))


def _pymbar():
    # pymbar logs a banner about optional JAX acceleration at import and a caution on every timeseries
    # call: advice for its interactive users, noise in a run's log
    logging.getLogger("pymbar").setLevel(logging.ERROR)
    import pymbar
    from pymbar import timeseries
    return pymbar, timeseries


def decorrelated(samples: np.ndarray) -> np.ndarray:
    """Samples every statistical inefficiency g (pymbar.timeseries): MBAR's errors assume independence."""
    _, timeseries = _pymbar()
    samples = np.asarray(samples, dtype=float)
    if len(samples) < 10 or np.ptp(samples) == 0:
        return samples
    return samples[timeseries.subsample_correlated_data(samples)]


def mbar_profile(windows: list[Window], temperature_K: float, *, bin_width: float = 0.01,
                 direction: int = 1, subsample: bool = True, guess: Profile | None = None,
                 divide: float | None = None) -> Profile:
    """A(ξ) from MBAR (pymbar's FES, histogram) over the same range as umbrella integration, with
    pymbar's analytical uncertainties of A relative to the reactant-minimum bin. `guess` (the umbrella
    integration profile) only starts the solver: its window free energies cut the iterations."""
    pymbar, _ = _pymbar()
    beta = 1.0 / (units.kB * temperature_K)
    series = [decorrelated(w.samples) if subsample else np.asarray(w.samples, float) for w in windows]
    x = np.concatenate(series)
    counts = np.array([len(s) for s in series])
    centres = np.array([w.centre for w in windows])[:, None]
    springs = np.array([w.spring for w in windows])[:, None]
    u_kn = beta * 0.5 * springs * (x[None] - centres) ** 2  # reduced bias of every sample in every window
    means = [np.mean(s) for s in series]
    lo, hi = min(means), max(means)
    # bins of bin_width over every sample (pymbar's histogram mislabels samples beyond its last edge);
    # A is read only on the bins between the lowest and highest window mean, which are all populated
    below = int(np.ceil((lo - x.min()) / bin_width)) + 1
    above = int(np.ceil((x.max() - lo) / bin_width)) + 1
    edges = lo + bin_width * np.arange(-below, above + 1)
    options = {} if guess is None else {"initial_f_k": _window_free_energies(guess, centres, springs, beta)}
    fes = pymbar.FES(u_kn, counts, verbose=False, mbar_options=options)
    fes.generate_fes(np.zeros(len(x)), x, fes_type="histogram", histogram_parameters={"bin_edges": edges})
    mids = 0.5 * (edges[1:] + edges[:-1])
    populated = np.histogram(x, edges)[0] > 0  # pymbar has no free energy for an empty bin
    mids = mids[(mids >= lo) & (mids <= hi) & populated]
    first = fes.get_fes(mids, reference_point="from-lowest", uncertainty_method=None)
    f = np.asarray(first["f_i"], float) / beta
    _, low, top = forward_barrier(f, direction, split_index(mids, divide))
    ref = fes.get_fes(mids, reference_point="from-specified", fes_reference=mids[low],
                      uncertainty_method="analytical")
    A = np.asarray(ref["f_i"], float) / beta
    dA = np.asarray(ref["df_i"], float) / beta
    barrier = float(A[top] - A[low])
    return Profile(mids, A, dA, barrier, float(dA[top]), float(mids[low]), float(mids[top]))


def _window_free_energies(profile: Profile, centres, springs, beta: float) -> np.ndarray:
    """Reduced free energies f_k = −ln ∫ exp(−β(A + w_k)) dξ of the biased windows from a profile."""
    from scipy.special import logsumexp

    e = beta * (profile.A_eV[None] + 0.5 * springs * (profile.xi[None] - centres) ** 2)
    f = -logsumexp(-e, axis=1)
    return f - f[0]
