"""Powder orientation sets and per-orientation site frequencies.

An orientation is the direction of B0 (static) or of the rotor axis (MAS) in the common crystal frame
in which every site's tensors are given; sites that exchange share it. Frequencies are offsets from the
reference in Hz on the δ scale (positive = deshielded), so the ppm axis is ν/|ν0|·10⁶ whatever the sign of γ.

Interactions:
- shielding to first order: ν = |ν0| · nᵀδn · 10⁻⁶ with δ = σ_ref − σ;
- quadrupolar central transition (m = ½ ↔ −½) to second order (its first order vanishes). With the EFG
  in frequency units Q = eQV/h and D = 2I(2I−1), X = I(I+1) − ¾, second-order perturbation theory in
  the frame with z ∥ B0 gives
      ν_CT^(2) = −(2X / (|ν0| D²)) · [(Q_xz² + Q_yz²) − ((Q_xx − Q_yy)² + 4Q_xy²)/8],
  written below through rotation invariants of n so no frame needs constructing;
- magic-angle spinning in the infinite spinning-speed limit: the frequency averaged over the rotor
  phase φ with n(φ) = cos θ_m r + sin θ_m (cos φ u + sin φ v). The static frequency is a polynomial of
  degree 4 in n, so the mean over 5 equally spaced phases is the exact average (rank-0 plus P4(cos θ_m)
  rank-4 terms for the quadrupolar part, σ_iso for the shielding).
"""
from __future__ import annotations

import numpy as np

MAGIC_ANGLE_RAD = float(np.arccos(1.0 / np.sqrt(3.0)))


def zcw(n_min: int) -> tuple[np.ndarray, np.ndarray]:
    """Zaremba–Conroy–Wolfsberg directions on the upper hemisphere (spectra are even in n).

    Returns (dirs (M, 3), weights (M,)) with M the first Fibonacci number ≥ n_min (Eden & Levitt 1998,
    hemisphere constants c = (−1, 1, 1)); equal weights.
    """
    f = [8, 13]
    while f[-1] < n_min:
        f.append(f[-1] + f[-2])
    M, g = f[-1], f[-3] if len(f) >= 3 else 5
    j = np.arange(M)
    beta = np.arccos(-1.0 * (1.0 * np.mod(j / M, 1.0) - 1.0))
    alpha = 2.0 * np.pi * np.mod(j * g / M, 1.0)
    dirs = np.stack([np.sin(beta) * np.cos(alpha), np.sin(beta) * np.sin(alpha), np.cos(beta)], axis=1)
    return dirs, np.full(M, 1.0 / M)


def lebedev(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Lebedev–Laikov directions on the sphere (scipy.integrate.lebedev_rule), weights normalised to 1."""
    from scipy.integrate import lebedev_rule

    x, w = lebedev_rule(order)
    return x.T.copy(), w / w.sum()


def orientations(scheme: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """'zcw': at least n directions; 'lebedev': the rule of degree n."""
    if scheme == "zcw":
        return zcw(n)
    if scheme == "lebedev":
        return lebedev(n)
    raise ValueError(f"unknown orientation scheme {scheme!r} (zcw, lebedev)")


def shielding_freqs_Hz(delta_ppm: np.ndarray, dirs: np.ndarray, larmor_Hz: float) -> np.ndarray:
    """First-order shift nᵀδn of each site for each direction: (n_dirs, N) in Hz."""
    d = 0.5 * (delta_ppm + np.swapaxes(delta_ppm, -1, -2))
    return np.einsum("oa,sab,ob->os", dirs, d, dirs) * larmor_Hz * 1e-6


def ct_second_order_Hz(Q_Hz: np.ndarray, dirs: np.ndarray, larmor_Hz: float, spin: float) -> np.ndarray:
    """Second-order quadrupolar shift of the central transition, static: (n_dirs, N) in Hz."""
    if spin < 1 or (2 * spin) % 2 != 1:
        raise ValueError("the central transition needs a half-integer spin I ≥ 3/2")
    Q = 0.5 * (Q_Hz + np.swapaxes(Q_Hz, -1, -2))
    Q = Q - (np.trace(Q, axis1=-2, axis2=-1) / 3.0)[..., None, None] * np.eye(3)  # the coupling is traceless
    Qn = np.einsum("sab,ob->osa", Q, dirs)  # Q n
    Qzz = np.einsum("oa,osa->os", dirs, Qn)  # nᵀQn
    Qn2 = np.einsum("osa,osa->os", Qn, Qn)  # |Qn|²
    QF2 = np.einsum("sab,sab->s", Q, Q)[None, :]  # ‖Q‖²_F
    q1 = Qn2 - Qzz**2  # Q_xz² + Q_yz²
    q2 = 2.0 * (QF2 - 2.0 * Qn2 + Qzz**2) - Qzz**2  # (Q_xx − Q_yy)² + 4 Q_xy² of the transverse block
    X = spin * (spin + 1) - 0.75
    D = 2 * spin * (2 * spin - 1)
    return -2.0 * X * (q1 - q2 / 8.0) / (larmor_Hz * D**2)


def _perpendicular_frame(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    trial = np.where(np.abs(r[:, [0]]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    u = np.cross(r, trial)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u, np.cross(r, u)


def site_freqs_Hz(
    dirs: np.ndarray,
    larmor_Hz: float,
    delta_ppm: np.ndarray | None = None,
    Q_Hz: np.ndarray | None = None,
    spin: float = 2.5,
    mas: bool = True,
    rotor_angle_rad: float = MAGIC_ANGLE_RAD,
) -> np.ndarray:
    """Frequencies (n_dirs, N) in Hz of N sites: first-order shielding + second-order CT quadrupolar,
    static (dirs = B0 directions) or spinning at infinite speed (dirs = rotor axes)."""
    if delta_ppm is None and Q_Hz is None:
        raise ValueError("give shift tensors, quadrupolar tensors or both")

    def static(n):
        out = 0.0
        if delta_ppm is not None:
            out = out + shielding_freqs_Hz(delta_ppm, n, larmor_Hz)
        if Q_Hz is not None:
            out = out + ct_second_order_Hz(Q_Hz, n, larmor_Hz, spin)
        return out

    if not mas:
        return static(dirs)
    u, v = _perpendicular_frame(dirs)
    c, s = np.cos(rotor_angle_rad), np.sin(rotor_angle_rad)
    total = 0.0
    for phi in 2.0 * np.pi * np.arange(5) / 5:
        total = total + static(c * dirs + s * (np.cos(phi) * u + np.sin(phi) * v))
    return total / 5.0
