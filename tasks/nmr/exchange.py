"""Markovian jump (stochastic Liouville) model of chemical exchange between N sites.

A nucleus hops between N environments with rate matrix K (dp/dt = K p; K[j, i] = k_{i→j} ≥ 0 for
i ≠ j, columns sum to zero). For one crystallite orientation the sites resonate at ν_j and the free
induction decay is G(t) = 1ᵀ exp[(iΩ + K − Λ) t] p_eq with Ω = diag(2π ν_j) and Λ = diag(π FWHM_j)
(Lorentzian broadening). Its spectrum is S(ν) = 2 Re[1ᵀ (2πiν − iΩ − K + Λ)⁻¹ p_eq], normalised so that
∫S dν = 1 per orientation. This is the model EXPRESS (Vold & Hoatson 2009) evaluates, reduced to the
single coherence that a central-transition or spin-½ spectrum observes; it assumes each site's
frequency is well defined between jumps (k ≪ ν0). Under MAS with rotor-averaged frequencies it is the
infinite spinning-speed limit, which needs both k and each site's anisotropic excursion ≪ ν_rot (the
jumps would otherwise interrupt the rotor's refocusing and the sidebands would carry intensity);
rotor.py propagates over the rotor period at finite speed and states when this limit holds.
"""
from __future__ import annotations

import numpy as np


def rate_matrix(n_sites: int, rates_Hz: dict[tuple[int, int], float]) -> np.ndarray:
    """K from directed rates {(i, j): k_{i→j}} in s⁻¹."""
    K = np.zeros((n_sites, n_sites))
    for (i, j), k in rates_Hz.items():
        if i == j or not (0 <= i < n_sites and 0 <= j < n_sites):
            raise ValueError(f"bad jump ({i}, {j}) for {n_sites} sites")
        if k < 0:
            raise ValueError(f"negative rate for jump ({i}, {j})")
        K[j, i] += k
    K -= np.diag(K.sum(axis=0))
    return K


def detailed_balance_rate_matrix(p_eq: np.ndarray, forward_Hz: dict[tuple[int, int], float]) -> np.ndarray:
    """K from one rate per pair {(i, j): k_{i→j}}; the reverse is k_{j→i} = k_{i→j} p_i / p_j."""
    p = _check_populations(p_eq)
    rates = {}
    for (i, j), k in forward_Hz.items():
        if (j, i) in forward_Hz:
            raise ValueError(f"give one direction per pair, both ({i}, {j}) and ({j}, {i}) given")
        rates[(i, j)] = k
        rates[(j, i)] = k * p[i] / p[j]
    return rate_matrix(len(p), rates)


def equilibrium_populations(K: np.ndarray) -> np.ndarray:
    """Stationary p with K p = 0, Σp = 1 (K must connect all sites)."""
    w, v = np.linalg.eig(K)
    i = np.argmin(np.abs(w))
    p = np.real(v[:, i])
    p = p / p.sum()
    if np.any(p < -1e-12):
        raise ValueError("rate matrix has no positive stationary state")
    return np.clip(p, 0.0, None)


def detailed_balance_violation(K: np.ndarray, p_eq: np.ndarray) -> float:
    """max |K_ji p_i − K_ij p_j| relative to the largest flux (0 for a reversible chain)."""
    flux = K * np.asarray(p_eq)[None, :]
    off = flux - flux.T
    np.fill_diagonal(off, 0.0)
    scale = np.abs(flux - np.diag(np.diag(flux))).max()
    return float(np.abs(off).max() / scale) if scale > 0 else 0.0


def _check_rate_matrix(K, n: int) -> np.ndarray:
    K = np.asarray(K, dtype=float)
    if K.shape != (n, n):
        raise ValueError(f"K {K.shape} must match {n} sites")
    if np.abs(K.sum(axis=0)).max() > 1e-9 * max(1.0, np.abs(K).max()):
        raise ValueError("columns of K must sum to zero (dp/dt = K p)")
    return K


def sum_lorentzians(mu: np.ndarray, amp: np.ndarray, axis_Hz: np.ndarray, max_block: int = 2_000_000) -> np.ndarray:
    """S(ν) = Σ_l 2 Re[c_l / (2πiν − μ_l)]: the spectrum of the FID Σ_l c_l e^{μ_l t} (each line has area Re c_l)."""
    axis = np.asarray(axis_Hz, dtype=float)
    spec = np.zeros(len(axis))
    if len(amp):
        keep = np.abs(amp) > 1e-14 * np.abs(amp).max()
        mu, amp = mu[keep], amp[keep]
    # real arithmetic: c / (γ + iδ) with γ = −Re μ, δ = ω − Im μ
    w = 2.0 * np.pi * axis
    step = max(1, max_block // max(1, len(axis)))
    for s in range(0, len(mu), step):
        g = -mu.real[s:s + step, None]
        d = w[None, :] - mu.imag[s:s + step, None]
        c = amp[s:s + step, None]
        spec += (2.0 * (c.real * g + c.imag * d) / (g * g + d * d)).sum(axis=0)
    return spec


def _check_populations(p_eq) -> np.ndarray:
    p = np.asarray(p_eq, dtype=float)
    if p.ndim != 1 or np.any(p <= 0):
        raise ValueError("p_eq must be a vector of positive populations")
    return p / p.sum()


def lineshape(
    freqs_Hz: np.ndarray,
    K: np.ndarray,
    p_eq: np.ndarray,
    axis_Hz: np.ndarray,
    fwhm_Hz: float | np.ndarray = 100.0,
    weights: np.ndarray | None = None,
    max_block: int = 2_000_000,
) -> np.ndarray:
    """Orientation-averaged exchange spectrum on axis_Hz.

    freqs_Hz: (n_orient, N) site frequencies per orientation (or (N,) for one orientation);
    K: (N, N) rate matrix in s⁻¹; p_eq: (N,); fwhm_Hz: Lorentzian FWHM, scalar or per site;
    weights: (n_orient,) orientation weights (normalised here). Returns S(ν) with ∫S dν ≈ 1.
    """
    f = np.atleast_2d(np.asarray(freqs_Hz, dtype=float))
    n_or, n = f.shape
    p = _check_populations(p_eq)
    K = _check_rate_matrix(K, n)
    if p.shape != (n,):
        raise ValueError(f"p_eq {p.shape} must match {n} sites")
    lam = np.broadcast_to(np.pi * np.asarray(fwhm_Hz, dtype=float), (n,))
    if np.any(lam <= 0):
        raise ValueError("fwhm_Hz must be positive")
    w = np.full(n_or, 1.0 / n_or) if weights is None else np.asarray(weights, float) / np.sum(weights)
    axis = np.asarray(axis_Hz, dtype=float)
    iw = 2j * np.pi * axis

    # A = iΩ + K − Λ per orientation; A = V diag(μ) V⁻¹ turns the resolvent into a sum of complex
    # Lorentzians Σ_k c_k / (iω − μ_k), c = (1ᵀV) ∘ (V⁻¹ p): O(N³) per orientation instead of one
    # N×N solve per frequency point.
    A = np.empty((n_or, n, n), dtype=complex)
    A[:] = K - np.diag(lam)
    A[:, np.arange(n), np.arange(n)] += 2j * np.pi * f
    mu, V = np.linalg.eig(A)
    Vinv = np.linalg.inv(V)
    amp = V.sum(axis=1) * (Vinv @ p) * w[:, None]
    # 1-norm condition number of the eigenvectors (cheaper than the SVD of np.linalg.cond)
    cond = np.abs(V).sum(axis=1).max(axis=1) * np.abs(Vinv).sum(axis=1).max(axis=1)
    good = np.where(cond < 1e8)[0]
    spec = sum_lorentzians(mu[good].ravel(), amp[good].ravel(), axis, max_block)
    # near-defective A (exceptional points of the exchange matrix): solve directly per frequency
    for o in np.where(cond >= 1e8)[0]:
        M = iw[:, None, None] * np.eye(n) - A[o][None]
        x = np.linalg.solve(M, np.broadcast_to(p.astype(complex), (len(axis), n))[..., None])[..., 0]
        spec += 2.0 * w[o] * np.real(x.sum(axis=1))
    return spec
