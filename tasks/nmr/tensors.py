"""Shielding and EFG tensors: reading, conventions and derived parameters.

Conventions follow soprano (the CCP-NC reference implementation):
- σ_iso = tr(σ)/3 of the symmetric part; principal values in Haeberlen order
  |σ_zz − σ_iso| ≥ |σ_xx − σ_iso| ≥ |σ_yy − σ_iso|;
  anisotropy Δσ = σ_zz − (σ_xx + σ_yy)/2, reduced anisotropy ζ = σ_zz − σ_iso,
  asymmetry η = (σ_yy − σ_xx)/ζ; span Ω = σ_max − σ_min, skew κ = 3(σ_iso − σ_med)/Ω (shielding).
- chemical shift δ = σ_ref − σ (Eq. 5.9, first order), reference per nucleus.
- EFG V in atomic units (E_h e⁻¹ a_0⁻²); C_Q = e Q V_zz / h with |V_zz| ≥ |V_yy| ≥ |V_xx|,
  η_Q = (V_xx − V_yy)/V_zz ∈ [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from scipy import constants as C

# Nuclear quadrupole moments in fm² (Pyykkö 2018; 17O as used by soprano and CASTEP).
QUADRUPOLE_MOMENT_FM2 = {"17O": -2.558, "2H": 0.286, "14N": 2.044, "23Na": 10.4, "27Al": 14.66, "35Cl": -8.165}
# Gyromagnetic ratios γ/2π in MHz/T (sign kept; spectra use |ν0| since the ppm axis does not depend on it).
GAMMA_MHZ_PER_T = {"17O": -5.7742, "1H": 42.5774, "13C": 10.7084, "15N": -4.3173, "2H": 6.5359,
                   "23Na": 11.2688, "27Al": 11.1031}
SPIN = {"17O": 2.5, "1H": 0.5, "13C": 0.5, "15N": 0.5, "2H": 1.0, "23Na": 1.5, "27Al": 2.5}

# 1 atomic unit of electric field gradient in V/m².
EFG_AU_V_PER_M2 = C.physical_constants["atomic unit of electric field gradient"][0]


def read_magres(path: str | Path, shielding: bool = False) -> Atoms:
    """Read a .magres file (CASTEP or QE-GIPAW); arrays 'ms' (σ, ppm) and/or 'efg' (a.u.) are 3×3 per atom.
    With `shielding` a file without 'ms' tensors is an error."""
    from ase.io import read

    atoms = read(str(path), format="magres")
    if shielding and "ms" not in atoms.arrays:
        raise ValueError(f"{path}: no shielding ('ms') tensors in its [magres] block")
    if "ms" not in atoms.arrays and "efg" not in atoms.arrays:
        raise ValueError(f"{path}: no [magres] block with ms or efg tensors")
    return atoms


def symmetric(t: np.ndarray) -> np.ndarray:
    """Symmetric part (the antisymmetric part does not enter first-order spectra)."""
    t = np.asarray(t, dtype=float)
    return 0.5 * (t + np.swapaxes(t, -1, -2))


def isotropic(t: np.ndarray) -> np.ndarray:
    return np.trace(np.asarray(t, dtype=float), axis1=-2, axis2=-1) / 3.0


def haeberlen(t: np.ndarray) -> np.ndarray:
    """Principal values (…, 3) in Haeberlen order [xx, yy, zz]."""
    ev = np.linalg.eigvalsh(symmetric(t))
    iso = ev.mean(axis=-1, keepdims=True)
    order = np.argsort(np.abs(ev - iso), axis=-1)[..., [1, 0, 2]]
    return np.take_along_axis(ev, order, axis=-1)


@dataclass(frozen=True)
class ShieldingParams:
    iso: np.ndarray
    anisotropy: np.ndarray  # Δσ = σ_zz − (σ_xx + σ_yy)/2
    reduced_anisotropy: np.ndarray  # ζ = σ_zz − σ_iso
    asymmetry: np.ndarray
    span: np.ndarray
    skew: np.ndarray


def shielding_params(sigma: np.ndarray) -> ShieldingParams:
    """Haeberlen / Herzfeld–Berger parameters of shielding tensors (…, 3, 3), ppm."""
    h = haeberlen(sigma)
    iso = h.mean(axis=-1)
    zeta = h[..., 2] - iso
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.where(zeta == 0, 0.0, (h[..., 1] - h[..., 0]) / zeta)
    srt = np.sort(h, axis=-1)
    span = srt[..., 2] - srt[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(span == 0, 0.0, 3.0 * (iso - srt[..., 1]) / span)
    return ShieldingParams(iso, 1.5 * zeta, zeta, eta, span, skew)


def chemical_shift(sigma: np.ndarray, sigma_ref_ppm: float) -> np.ndarray:
    """δ tensor = σ_ref·1 − σ (ppm); its isotropic part is δ_iso = σ_ref − σ_iso."""
    s = symmetric(sigma)
    return sigma_ref_ppm * np.eye(3) - s


def efg_principal(efg: np.ndarray) -> np.ndarray:
    """EFG principal values (…, 3) ordered |V_xx| ≤ |V_yy| ≤ |V_zz| (NQR order)."""
    ev = np.linalg.eigvalsh(symmetric(efg))
    order = np.argsort(np.abs(ev), axis=-1)
    return np.take_along_axis(ev, order, axis=-1)


def _lookup(table: dict, isotope: str, what: str):
    if isotope not in table:
        raise ValueError(f"no {what} for isotope {isotope!r}; known: {sorted(table)}")
    return table[isotope]


def quadrupole_tensor_Hz(efg_au: np.ndarray, isotope: str = "17O") -> np.ndarray:
    """e Q V / h in Hz (…, 3, 3): the EFG in frequency units; its V_zz component is C_Q."""
    q_m2 = _lookup(QUADRUPOLE_MOMENT_FM2, isotope, "quadrupole moment") * 1e-30
    return symmetric(efg_au) * EFG_AU_V_PER_M2 * C.e * q_m2 / C.h


def cq_Hz(efg_au: np.ndarray, isotope: str = "17O") -> np.ndarray:
    """C_Q = e Q V_zz / h in Hz (signed)."""
    return efg_principal(quadrupole_tensor_Hz(efg_au, isotope))[..., 2]


def eta_q(efg_au: np.ndarray) -> np.ndarray:
    v = efg_principal(efg_au)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v[..., 2] == 0, 0.0, (v[..., 0] - v[..., 1]) / v[..., 2])


def larmor_Hz(isotope: str, field_T: float) -> float:
    """|ν0| = |γ/2π| B0 in Hz."""
    return abs(_lookup(GAMMA_MHZ_PER_T, isotope, "gyromagnetic ratio")) * 1e6 * field_T


def rotate(t: np.ndarray, R: np.ndarray) -> np.ndarray:
    """R t Rᵀ for tensors (…, 3, 3)."""
    return np.einsum("ij,...jk,lk->...il", R, t, R)
