"""Exchange under magic-angle spinning at finite speed: rotor-period propagation (EXPRESS).

The method of EXPRESS (Vold & Hoatson, J. Magn. Reson. 198 (2009) 57), reduced to the single
coherence a central-transition or spin-½ spectrum observes. A crystallite is given by the direction r
of the rotor axis in the crystal frame (α, β) and the rotor phase γ. B0 makes the rotor angle θ with r,
so in the crystal frame it points along n(φ) = cos θ r + sin θ (cos φ u + sin φ v), φ = γ + ω_r t, and
each site j resonates at the static frequency of that direction, ν_j(φ) (first-order shielding and the
second-order central transition: a trigonometric polynomial of degree 4 in φ, rank-2 and rank-4 terms).

One rotor period is cut into N steps; on step n the sites' magnetisations evolve under
A_n = iΩ_n + K − Λ, with Ω_n the step-averaged frequencies (exact: from the Fourier coefficients of
ν_j(φ)), K the exchange matrix and Λ the Lorentzian broadening; E_n = exp(A_n Δt). With P_k = E_{k−1}⋯E_0
and the period propagator W = P_N = V diag(e^{μτ_r}) V⁻¹ the FID of a crystallite that starts at step k
is G_k(jΔt) = 1ᵀ P_{k+j} P_k⁻¹ p_eq (P_{r+N} = P_r W). The N starting steps are N values of γ
(γ-COMPUTE, Edén, Lee & Levitt, J. Magn. Reson. A 120 (1996) 56), and their average is a sum of lines
    S(t) = Σ_q Σ_m A_{m,q} B_{−m,q} exp[(μ_q + i m ω_r) t],
A and B the discrete Fourier coefficients over the rotor period of (1ᵀ P_r V) e^{−μ r Δt} and
(V⁻¹ P_k⁻¹ p_eq) e^{μ k Δt}: the centre band and its spinning sidebands, each a complex Lorentzian,
with Σ A B = 1 per orientation (the same normalisation as exchange.lineshape).
"""
from __future__ import annotations

import numpy as np

from . import exchange, powder

# The infinite-speed model (exchange.lineshape on rotor-averaged frequencies) is used when (a) the spinning
# rate exceeds the largest rotor-modulated excursion Δν of a site frequency by FAST_PATH_FACTOR (sidebands
# ≲ 1 % of the centre band), (b) it exceeds the largest jump rate k by the same factor (the jumps do not
# interfere with the rotation), and (c) the broadening the model leaves out, ≈ k (Δν/ν_rot)² for k ≪ ν_rot,
# is at most MISSED_WIDTH_FRACTION of the Lorentzian FWHM. At that boundary the two models differ by ≲ 2 %
# of the peak height (tests/test_nmr_finite_mas.py).
FAST_PATH_FACTOR = 10.0
MISSED_WIDTH_FRACTION = 0.05
# harmonics 0…±4 of ν(φ): sampling at 9 rotor phases gives them exactly
N_PHASES = 9
# modes of the period propagator damped by more than e^{-MAX_DECAY} per period (jumps much faster than
# ν_rot) are dropped: their lines are wider than ~10 ν_rot and their weight is of order (Δν/k)²
MAX_DECAY = 30.0


def frequency_harmonics(
    dirs: np.ndarray,
    larmor_Hz: float,
    delta_ppm: np.ndarray | None = None,
    Q_Hz: np.ndarray | None = None,
    spin: float = 2.5,
    rotor_angle_rad: float = powder.MAGIC_ANGLE_RAD,
) -> np.ndarray:
    """Fourier coefficients c_m (n_dirs, 9, N) of ν_j(φ) = Σ_{m=−4}^{4} c_m e^{imφ} for rotor axes dirs;
    index m mod 9 (numpy FFT order). c_0 is the infinite-speed frequency of powder.site_freqs_Hz."""
    u, v = powder._perpendicular_frame(dirs)
    c, s = np.cos(rotor_angle_rad), np.sin(rotor_angle_rad)
    phi = 2.0 * np.pi * np.arange(N_PHASES) / N_PHASES
    samples = np.stack([
        powder.site_freqs_Hz(c * dirs + s * (np.cos(f) * u + np.sin(f) * v), larmor_Hz, delta_ppm, Q_Hz, spin,
                             mas=False)
        for f in phi
    ], axis=1)
    return np.fft.fft(samples, axis=1) / N_PHASES


def _harmonic_orders() -> np.ndarray:
    return np.fft.fftfreq(N_PHASES, 1.0 / N_PHASES).round().astype(int)  # 0, 1…4, −4…−1


def frequency_on_phases(coef: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """ν_j(φ) (n_dirs, len(phi), N) from the harmonics."""
    m = _harmonic_orders()
    return np.real(np.einsum("pm,omn->opn", np.exp(1j * np.outer(phi, m)), coef))


def step_frequencies_Hz(coef: np.ndarray, n_steps: int) -> np.ndarray:
    """Mean of ν_j(φ) over each of n_steps equal steps of the rotor period, (n_dirs, n_steps, N)."""
    m = _harmonic_orders()
    dphi = 2.0 * np.pi / n_steps
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.where(m == 0, 1.0, (np.exp(1j * m * dphi) - 1.0) / (1j * m * dphi))
    start = np.exp(1j * np.outer(np.arange(n_steps) * dphi, m))  # (n_steps, 9)
    return np.real(np.einsum("pm,m,omn->opn", start, avg, coef))


def anisotropic_excursion_Hz(coef: np.ndarray) -> float:
    """max over orientations and sites of |ν_j(φ) − ν̄_j|: how far the rotor modulates a frequency."""
    nu = frequency_on_phases(coef, 2.0 * np.pi * np.arange(64) / 64)
    return float(np.abs(nu - np.real(coef[:, :1])).max()) if nu.size else 0.0


def max_exit_rate_Hz(K: np.ndarray) -> float:
    return float(np.max(-np.diag(np.asarray(K, dtype=float)), initial=0.0))


def infinite_speed_valid(coef: np.ndarray, K: np.ndarray, spin_rate_Hz: float, fwhm_Hz: float | np.ndarray,
                         factor: float = FAST_PATH_FACTOR, width_fraction: float = MISSED_WIDTH_FRACTION) -> bool:
    """The criterion (a)–(c) above for these frequencies, jumps and spinning rate.

    Without rotor-modulated frequencies (isotropic sites) there is nothing for the rotation to average or
    the jumps to interrupt, and both models are the same at any rate."""
    if np.isinf(spin_rate_Hz):
        return True
    aniso = anisotropic_excursion_Hz(coef)
    if aniso <= 1e-9 * spin_rate_Hz:
        return True
    k = max_exit_rate_Hz(K)
    missed = k * (aniso / spin_rate_Hz) ** 2
    return (spin_rate_Hz >= factor * aniso and spin_rate_Hz >= factor * k
            and missed <= width_fraction * float(np.min(fwhm_Hz)))


def n_steps_for(coef: np.ndarray, spin_rate_Hz: float, reference_Hz: np.ndarray,
                min_steps: int = 16, max_phase_step: float = 0.1) -> int:
    """Steps per rotor period, a power of 2: enough harmonics to hold every sideband (the window
    N·ν_rot covers 3× the largest offset from the reference) and a phase change per step
    2π·Δν·Δt ≤ max_phase_step (Δν the rotor-modulated excursion). K is constant, so the error of
    piecewise-constant frequencies, from their commutator with K, is bounded by the same phase step
    (converged to < 0.5 % at k = 2.4·10⁵ s⁻¹, tests/test_nmr_finite_mas.py)."""
    nu = frequency_on_phases(coef, 2.0 * np.pi * np.arange(64) / 64)
    offset = np.abs(nu - reference_Hz[:, None, None]).max() if nu.size else 0.0
    aniso = anisotropic_excursion_Hz(coef)
    need = max(min_steps, 6.0 * offset / spin_rate_Hz + 8, 2.0 * np.pi * aniso / (spin_rate_Hz * max_phase_step))
    return int(2 ** np.ceil(np.log2(need)))


def _expm(A: np.ndarray, order: int = 14) -> np.ndarray:
    """exp of a stack of matrices (…, n, n): scaling and squaring of a Taylor series, batched (scipy's
    expm loops over the stack in Python). Scaled to ‖A‖₁ ≤ ½, the order-14 remainder is < 1e-19."""
    norm = np.abs(A).sum(axis=-2).max() if A.size else 0.0
    s = max(0, int(np.ceil(np.log2(norm / 0.5)))) if norm > 0 else 0
    X = A / 2.0**s
    out = np.broadcast_to(np.eye(A.shape[-1], dtype=A.dtype), A.shape).copy()
    for j in range(order, 0, -1):  # Horner: I + X/1 (I + X/2 (I + …))
        out = np.eye(A.shape[-1]) + (X @ out) / j
    for _ in range(s):
        out = out @ out
    return out


def prune(mu: np.ndarray, amp: np.ndarray, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Drop the weakest lines whose |amplitudes| sum to at most tol of the total (most of the N
    harmonics of a crystallite carry nothing): the spectrum changes by at most that fraction of its area."""
    if not len(amp):
        return mu, amp
    order = np.argsort(np.abs(amp))
    tail = np.cumsum(np.abs(amp[order]))
    n_drop = np.searchsorted(tail, tol * tail[-1], side="right")
    keep = order[n_drop:]
    return mu[keep], amp[keep]


def sideband_lines(
    step_Hz: np.ndarray,
    K: np.ndarray,
    p_eq: np.ndarray,
    spin_rate_Hz: float,
    fwhm_Hz: float | np.ndarray,
    weights: np.ndarray,
    reference_Hz: np.ndarray,
    cond_max: float = 1e8,
):
    """Lines (μ, amplitude) of the γ-averaged spectrum for every orientation, flattened, and the
    orientations whose period propagator is near-defective, with what their resolvent needs.

    step_Hz: (n_or, N_steps, N_sites) step-averaged frequencies; reference_Hz: (n_or,) demodulation
    frequency (the principal logarithm puts each μ within ±ν_rot/2 of it; the harmonic index m moves
    the line to its place)."""
    n_or, n_steps, n = step_Hz.shape
    tau = 1.0 / spin_rate_Hz
    dt = tau / n_steps
    lam = np.broadcast_to(np.pi * np.asarray(fwhm_Hz, dtype=float), (n,))
    A = np.empty((n_or, n_steps, n, n), dtype=complex)
    A[:] = K - np.diag(lam)
    idx = np.arange(n)
    A[..., idx, idx] += 2j * np.pi * (step_Hz - reference_Hz[:, None, None])
    E = _expm(A * dt)
    # prefix products P_k = E_{k−1}⋯E_0 and suffix products applied to p, L_k p = E_{N−1}⋯E_k p: with
    # W = L_k P_k, V⁻¹P_k⁻¹p = Λ⁻¹V⁻¹L_k p needs no inverse of P_k (singular once fast jumps damp a mode
    # to nothing within a step)
    P = np.empty((n_or, n_steps + 1, n, n), dtype=complex)
    P[:, 0] = np.eye(n)
    for k in range(n_steps):
        P[:, k + 1] = E[:, k] @ P[:, k]
    W = P[:, n_steps]
    L = np.empty((n_or, n_steps + 1, n, n), dtype=complex)
    L[:, n_steps] = np.eye(n)
    for k in range(n_steps - 1, -1, -1):
        L[:, k] = L[:, k + 1] @ E[:, k]
    Lp = L[:, :n_steps] @ p_eq.astype(complex)  # (n_or, N, n)
    lam_W, V = np.linalg.eig(W)
    Vinv = np.linalg.inv(V)
    cond = np.abs(V).sum(axis=1).max(axis=1) * np.abs(Vinv).sum(axis=1).max(axis=1)
    # modes that decay by e^{-MAX_DECAY} within a period carry no line worth its overflow risk
    live = np.abs(lam_W) > np.exp(-MAX_DECAY)
    mu = np.log(np.where(live, lam_W, 1.0)) / tau  # principal branch: Im μ within ±ω_r/2 of the reference
    r_dt = np.arange(n_steps)[None, :, None] * dt
    a = np.einsum("oki,oiq->okq", P[:, :n_steps].sum(axis=2), V) * np.exp(-mu[:, None, :] * r_dt)
    b = np.einsum("oqi,oki->okq", Vinv, Lp) * np.exp(-mu[:, None, :] * (tau - r_dt))
    b *= live[:, None, :]
    Af = np.fft.fft(a, axis=1) / n_steps
    Bf = np.fft.fft(b, axis=1) / n_steps
    neg = (-np.arange(n_steps)) % n_steps
    amp = Af * Bf[:, neg] * weights[:, None, None]  # A_m B_{−m}
    m = np.fft.fftfreq(n_steps, 1.0 / n_steps)
    mu_lines = mu[:, None, :] + 2j * np.pi * (reference_Hz[:, None, None] + m[None, :, None] * spin_rate_Hz)
    good = cond < cond_max
    bad = [dict(E=E[o], p_eq=p_eq, weight=weights[o], reference_Hz=reference_Hz[o], dt=dt) for o in np.where(~good)[0]]
    return mu_lines[good].ravel(), amp[good].ravel(), bad


def _resolvent_spectrum(E: np.ndarray, p_eq: np.ndarray, weight: float, reference_Hz: float, dt: float,
                        axis_Hz: np.ndarray) -> np.ndarray:
    """γ-averaged spectrum of one orientation with a near-defective period propagator, from the
    discrete-time transform of its FID samples; no eigenvectors needed. For the start at step k,
    Σ_j z^j G_k(jΔt) = Σ_s z^s 1ᵀQ_{k,s} (1 − z^N W_k)⁻¹ p with Q_{k,s} the s steps from k, W_k = Q_{k,N},
    z = exp(−i(ω − ω_ref)Δt); trapezoid end correction (G(0) = 1)."""
    n_steps, n = E.shape[0], E.shape[1]
    E_k = E[(np.arange(n_steps)[:, None] + np.arange(n_steps)[None, :]) % n_steps]  # (k, s, n, n)
    Q = np.empty((n_steps, n_steps + 1, n, n), dtype=complex)
    Q[:, 0] = np.eye(n)
    for s in range(n_steps):
        Q[:, s + 1] = E_k[:, s] @ Q[:, s]
    rows = Q[:, :n_steps].sum(axis=2)  # (k, s, n): 1ᵀ Q_{k,s}
    z = np.exp(-2j * np.pi * (axis_Hz - reference_Hz) * dt)
    zs = z[:, None] ** np.arange(n_steps)[None, :]  # (F, s)
    total = np.zeros(len(z), dtype=complex)
    for k in range(n_steps):
        M = np.eye(n)[None] - (z ** n_steps)[:, None, None] * Q[k, n_steps][None]
        y = np.linalg.solve(M, np.broadcast_to(p_eq.astype(complex), (len(z), n))[..., None])[..., 0]
        total += np.einsum("fi,fi->f", zs @ rows[k], y)
    series = dt * (total / n_steps - 0.5)
    return 2.0 * weight * np.real(series)


def lineshape(
    coef: np.ndarray,
    K: np.ndarray,
    p_eq: np.ndarray,
    axis_Hz: np.ndarray,
    spin_rate_Hz: float,
    fwhm_Hz: float | np.ndarray = 100.0,
    weights: np.ndarray | None = None,
    n_steps: int | None = None,
    mirror: bool | None = None,
    cond_max: float = 1e8,
    block_elements: int = 2_000_000,
) -> np.ndarray:
    """Orientation- and γ-averaged exchange spectrum at finite spinning speed on axis_Hz, ∫S dν ≈ 1.

    coef: (n_dirs, 9, N) from frequency_harmonics for rotor axes on a hemisphere (ZCW) or sphere.
    Rotor axes r and −r spin in opposite senses; the γ-averaged spectra of the two are equal when K obeys
    detailed balance (then 1ᵀ M p is invariant under transposing the time-ordered propagator), so a
    hemisphere suffices; otherwise (mirror=None decides) −r is added."""
    coef = np.asarray(coef)
    n_or, _, n = coef.shape
    p = exchange._check_populations(p_eq)
    K = exchange._check_rate_matrix(np.asarray(K, dtype=float), n)
    if p.shape != (n,):
        raise ValueError(f"p_eq {p.shape} must match {n} sites")
    if np.any(np.asarray(fwhm_Hz) <= 0) or not spin_rate_Hz > 0:
        raise ValueError("fwhm_Hz and spin_rate_Hz must be positive")
    w = np.full(n_or, 1.0 / n_or) if weights is None else np.asarray(weights, float) / np.sum(weights)
    if mirror is None:
        mirror = exchange.detailed_balance_violation(K, p) > 1e-9
    if mirror:
        m = _harmonic_orders()
        # −r with frame (−u, v) sees n(−φ) up to a sign (frequencies are even in n): c_m → c_{−m}
        coef = np.concatenate([coef, coef[:, (-m) % N_PHASES]])
        w = np.concatenate([w, w]) / 2.0
    reference = np.real(coef[:, 0]) @ p
    if n_steps is None:
        n_steps = n_steps_for(coef, spin_rate_Hz, reference)
    axis = np.asarray(axis_Hz, dtype=float)
    spec = np.zeros(len(axis))
    # orientations in blocks: the step propagators take n_steps·n² complex numbers per orientation
    block = max(1, int(block_elements // (n_steps * n * n)))
    for o in range(0, len(coef), block):
        sl = slice(o, o + block)
        mu, amp, bad = sideband_lines(step_frequencies_Hz(coef[sl], n_steps), K, p, spin_rate_Hz, fwhm_Hz, w[sl],
                                      reference[sl], cond_max)
        spec += exchange.sum_lorentzians(*prune(mu, amp), axis)
        for b in bad:
            spec += _resolvent_spectrum(axis_Hz=axis, **b)
    return spec


def mas_lineshape(
    dirs: np.ndarray,
    weights: np.ndarray,
    larmor_Hz: float,
    delta_ppm: np.ndarray | None,
    Q_Hz: np.ndarray | None,
    spin: float,
    K: np.ndarray,
    p_eq: np.ndarray,
    axis_Hz: np.ndarray,
    fwhm_Hz: float | np.ndarray,
    spin_rate_Hz: float,
) -> tuple[np.ndarray, str]:
    """MAS exchange spectrum at spin_rate_Hz (np.inf: infinite speed) and the model the criterion chose:
    'infinite-speed' (exchange.lineshape on the rotor-averaged frequencies) or 'finite-speed'."""
    coef = frequency_harmonics(dirs, larmor_Hz, delta_ppm, Q_Hz, spin)
    if infinite_speed_valid(coef, K, spin_rate_Hz, fwhm_Hz):
        return exchange.lineshape(np.real(coef[:, 0]), K, p_eq, axis_Hz, fwhm_Hz, weights), "infinite-speed"
    return lineshape(coef, K, p_eq, axis_Hz, spin_rate_Hz, fwhm_Hz, weights), "finite-speed"
