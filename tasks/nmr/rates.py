"""Rates between minima: harmonic transition-state theory (Vineyard) and the Eyring form (Eq. 3.2).

Vineyard (1957): k = (Π_{i=1}^{n} ν_i^min / Π_{i=1}^{n-1} ν_i^TS) · exp(−ΔE/k_B T), with ν the real normal-mode
frequencies of the minimum and of the saddle (its one imaginary mode excluded) and ΔE = E_TS − E_min.
Eyring–Polanyi (Eq. 3.2): k = κ k_B T / h · exp(−ΔG‡ / k_B T).
Frequencies come from ase.vibrations.Vibrations (finite differences) on whatever calculator is given,
normally the MLFF of the run (tasks.mlff.load_mlff).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.units import kB
from scipy import constants as C

H_EV_S = C.h / C.e  # Planck constant in eV·s


def vibrational_frequencies_Hz(
    atoms: Atoms, calc, workdir: str | Path, indices: list[int] | None = None, delta_A: float = 0.01, nfree: int = 2
) -> np.ndarray:
    """Normal-mode frequencies (complex; imaginary modes have imaginary part) in Hz via ASE Vibrations."""
    from ase.vibrations import Vibrations

    a = atoms.copy()
    a.calc = calc
    Path(workdir).mkdir(parents=True, exist_ok=True)
    vib = Vibrations(a, indices=indices, name=str(Path(workdir) / "vib"), delta=delta_A, nfree=nfree)
    vib.run()
    energies_eV = np.asarray(vib.get_energies(), dtype=complex)
    return energies_eV / H_EV_S


def _split_modes(freqs: np.ndarray, n_zero: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop the n_zero modes of smallest |ν| (translations/rotations); return (real, imaginary) magnitudes."""
    f = np.asarray(freqs, dtype=complex)
    if n_zero:
        f = f[np.argsort(np.abs(f))][n_zero:]
    imag = np.abs(f.imag) > np.abs(f.real)
    return np.abs(f[~imag]), np.abs(f[imag])


def vineyard_prefactor_Hz(freqs_min_Hz: np.ndarray, freqs_ts_Hz: np.ndarray, n_zero: int = 0) -> float:
    """Π ν_min / Π' ν_TS; the minimum must have no imaginary mode and the saddle exactly one."""
    real_min, imag_min = _split_modes(freqs_min_Hz, n_zero)
    real_ts, imag_ts = _split_modes(freqs_ts_Hz, n_zero)
    if len(imag_min):
        raise ValueError(f"minimum has {len(imag_min)} imaginary mode(s): not a minimum (or raise n_zero)")
    if len(imag_ts) != 1:
        raise ValueError(f"saddle has {len(imag_ts)} imaginary modes, expected exactly one (first-order saddle)")
    if len(real_min) != len(real_ts) + 1:
        raise ValueError(f"mode counts differ: {len(real_min)} at the minimum, {len(real_ts)}+1 at the saddle")
    # ratio of products through logs: 3N-term products overflow
    return float(np.exp(np.sum(np.log(real_min)) - np.sum(np.log(real_ts))))


def harmonic_tst_rate_Hz(barrier_eV: float, temperature_K: float, prefactor_Hz: float) -> float:
    """k = ν* exp(−ΔE / k_B T)."""
    if temperature_K <= 0:
        raise ValueError("temperature_K must be positive")
    return float(prefactor_Hz * np.exp(-barrier_eV / (kB * temperature_K)))


def eyring_rate_Hz(dG_eV: float, temperature_K: float, kappa: float = 1.0) -> float:
    """Eq. 3.2: k = κ k_B T / h · exp(−ΔG‡ / k_B T)."""
    if temperature_K <= 0:
        raise ValueError("temperature_K must be positive")
    kT = kB * temperature_K
    return float(kappa * kT / H_EV_S * np.exp(-dG_eV / kT))


def harmonic_populations(energies_eV: np.ndarray, freq_sets_Hz: list[np.ndarray] | None, temperature_K: float,
                         n_zero: int = 0) -> np.ndarray:
    """Equilibrium populations of minima, p_i ∝ exp(−E_i/k_BT) / Π ν_i (classical harmonic wells).

    With this choice the Vineyard rates of both directions through one saddle obey detailed balance
    exactly; with freq_sets_Hz=None the wells are taken as equally wide (Boltzmann factors only).
    """
    e = np.asarray(energies_eV, dtype=float)
    logp = -(e - e.min()) / (kB * temperature_K)
    if freq_sets_Hz is not None:
        logp = logp - np.array([np.sum(np.log(_split_modes(f, n_zero)[0])) for f in freq_sets_Hz])
    p = np.exp(logp - logp.max())
    return p / p.sum()
