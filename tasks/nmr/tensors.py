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

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from scipy import constants as C


@dataclass(frozen=True)
class Isotope:
    """Nuclear data of one isotope, from soprano's table (CCP-NC; IUPAC γ, Pyykkö 2018 quadrupole moments)."""

    element: str
    mass_number: int
    gamma_MHz_per_T: float  # γ/2π, sign kept; spectra use |ν0| since the ppm axis does not depend on it
    spin: float
    quadrupole_moment_fm2: float  # 0 for I = 1/2


@functools.cache
def isotope_data(name: str) -> Isotope:
    """'17O', '67Zn', '2H' … -> its nuclear data; an isotope soprano has no data for is an error."""
    from soprano.data.nmr import nmr_gamma, nmr_quadrupole, nmr_spin

    m = re.fullmatch(r"(\d+)([A-Z][a-z]?)", name)
    if m is None:
        raise ValueError(f"isotope {name!r}: expected mass number then element, e.g. '17O' or '67Zn'")
    mass, element = int(m.group(1)), m.group(2)
    try:
        gamma = nmr_gamma(element, mass) / (2 * np.pi * 1e6)
        spin, q_mb = nmr_spin(element, mass), nmr_quadrupole(element, mass)
    except RuntimeError as exc:  # soprano's "no NMR data" / "does not exist for isotope"
        raise ValueError(f"isotope {name!r}: no NMR data ({str(exc).splitlines()[0]})") from None
    return Isotope(element, mass, float(gamma), float(spin), float(q_mb) / 10.0)  # 1 mb = 0.1 fm²


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


def write_magres(path: str | Path, atoms: Atoms, shielding_ppm: np.ndarray,
                 efg_au: np.ndarray | None = None, calculation: dict[str, str] | None = None) -> Path:
    """Write σ (ppm) and V (a.u.) per atom as a CASTEP-format .magres that `read_magres`, soprano and
    ASE read back. A molecule (no periodic direction) is written without a lattice, as the format allows;
    `calculation`: the [calculation] block (calc_code, calc_xcfunctional …)."""
    from ase.io.magres import write_magres as ase_write_magres

    out = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    units = {"ms": "ppm"}
    out.new_array("ms", np.asarray(shielding_ppm, dtype=float).reshape(len(atoms), 3, 3))
    if efg_au is not None:
        units["efg"] = "au"
        out.new_array("efg", np.asarray(efg_au, dtype=float).reshape(len(atoms), 3, 3))
    out.info["magres_units"] = units
    if calculation:
        out.info["magresblock_calculation"] = {k: [[v]] for k, v in calculation.items()}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fd:
        ase_write_magres(fd, out)
    tmp.replace(path)  # a reader never sees half a file
    return path


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


def traceless(t: np.ndarray) -> np.ndarray:
    """Symmetric, traceless part. A field gradient is traceless (Laplace: ∇²V = 0 outside the nucleus);
    what a calculation leaves in its trace is numerical noise, and a 1 % trace would shift a central
    transition by ~100 Hz, so it is removed wherever the EFG enters."""
    s = symmetric(t)
    return s - isotropic(s)[..., None, None] * np.eye(3)


def efg_principal(efg: np.ndarray) -> np.ndarray:
    """EFG principal values (…, 3) of the traceless part, ordered |V_xx| ≤ |V_yy| ≤ |V_zz| (NQR order)."""
    ev = np.linalg.eigvalsh(traceless(efg))
    order = np.argsort(np.abs(ev), axis=-1)
    return np.take_along_axis(ev, order, axis=-1)


def quadrupole_tensor_Hz(efg_au: np.ndarray, isotope: str = "17O") -> np.ndarray:
    """e Q V / h in Hz (…, 3, 3): the EFG in frequency units; its V_zz component is C_Q."""
    q = isotope_data(isotope).quadrupole_moment_fm2
    if q == 0:
        raise ValueError(f"{isotope} has spin 1/2: no quadrupole moment, no EFG coupling")
    q_m2 = q * 1e-30
    return traceless(efg_au) * EFG_AU_V_PER_M2 * C.e * q_m2 / C.h


def cq_Hz(efg_au: np.ndarray, isotope: str = "17O") -> np.ndarray:
    """C_Q = e Q V_zz / h in Hz (signed)."""
    return efg_principal(quadrupole_tensor_Hz(efg_au, isotope))[..., 2]


def eta_q(efg_au: np.ndarray) -> np.ndarray:
    v = efg_principal(efg_au)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v[..., 2] == 0, 0.0, (v[..., 0] - v[..., 1]) / v[..., 2])


def larmor_Hz(isotope: str, field_T: float) -> float:
    """|ν0| = |γ/2π| B0 in Hz."""
    return abs(isotope_data(isotope).gamma_MHz_per_T) * 1e6 * field_T


def rotate(t: np.ndarray, R: np.ndarray) -> np.ndarray:
    """R t Rᵀ for tensors (…, 3, 3)."""
    return np.einsum("ij,...jk,lk->...il", R, t, R)
