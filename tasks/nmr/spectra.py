"""Spectra across exchange regimes: the four panels of thesis Fig. 5.1.

A nucleus a keeps its identity while the system hops between minima i, so its jump model has one
state per minimum, carrying that minimum's tensors (δ^(i)_a, Q^(i)_a) in the common crystal frame:
  A  static                 minimum tensors, no exchange (K = 0)
  B  intermediate           minimum tensors, jumps with the TST rate matrix K
  C  fast                   MD-averaged tensors (Eq. 5.10), no exchange
  D  fast + intermediate    MD-averaged tensors, jumps with K
The observed spectrum is the sum over nuclei of the element.
The two kinds of averaging differ for the quadrupolar term, which is second order in V: jumps (B, D; rates
≪ ν0) average each site's central-transition frequency, so even k → ∞ keeps ⟨ν^(2)(V)⟩; motion faster
than the Larmor period (C, the MD of Eq. 5.10) averages V itself, giving ν^(2)(⟨V⟩). For shielding,
first order, both coincide.
Under MAS the spinning rate decides the model (rotor.mas_lineshape): rotor-period propagation with its
spinning sidebands (EXPRESS) at finite speed, the rotor-averaged frequencies (infinite-speed limit) where
rotor.infinite_speed_valid holds: ν_rot ≥ 10 × the largest anisotropic excursion and jump rate, and the
broadening that limit leaves out ≤ 5 % of the line width.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import exchange, powder, rotor

PANELS = {"A": "static", "B": "intermediate", "C": "fast", "D": "fast + intermediate"}


@dataclass
class Experiment:
    """Acquisition: nucleus, field, spinning, broadening, ppm window.

    spin_rate_Hz: the MAS rate (the thesis's experiments: 20 kHz); np.inf for the infinite-speed limit."""

    isotope: str = "17O"
    field_T: float = 23.5
    mas: bool = True
    spin_rate_Hz: float = 20_000.0
    fwhm_Hz: float = 300.0
    ppm_min: float = -100.0
    ppm_max: float = 400.0
    n_points: int = 4096
    orientation_scheme: str = "zcw"
    n_orientations: int = 2000

    @property
    def axis_ppm(self) -> np.ndarray:
        return np.linspace(self.ppm_min, self.ppm_max, self.n_points)


def nucleus_spectra(
    delta_ppm: np.ndarray,
    Q_Hz: np.ndarray | None,
    K: np.ndarray,
    p_eq: np.ndarray,
    exp: Experiment,
) -> np.ndarray:
    """Spectra (n_nuclei, n_points) on exp.axis_ppm, each normalised to area p-weighted 1 per nucleus.

    delta_ppm: (n_states, n_nuclei, 3, 3) shift tensors δ = σ_ref − σ; Q_Hz: same shape (eQV/h) or None.
    """
    from .tensors import isotope_data, larmor_Hz

    delta_ppm = np.asarray(delta_ppm, dtype=float)
    if delta_ppm.ndim != 4 or delta_ppm.shape[-2:] != (3, 3):
        raise ValueError(f"delta_ppm must be (n_states, n_nuclei, 3, 3), got {delta_ppm.shape}")
    n_states, n_nuc = delta_ppm.shape[:2]
    if Q_Hz is not None and np.shape(Q_Hz) != delta_ppm.shape:
        raise ValueError(f"Q_Hz shape {np.shape(Q_Hz)} differs from delta_ppm {delta_ppm.shape}")
    nu0 = larmor_Hz(exp.isotope, exp.field_T)
    dirs, w = powder.orientations(exp.orientation_scheme, exp.n_orientations)
    axis_Hz = exp.axis_ppm * nu0 * 1e-6
    spin = isotope_data(exp.isotope).spin
    out = np.empty((n_nuc, len(axis_Hz)))
    for a in range(n_nuc):
        Q_a = None if Q_Hz is None else np.asarray(Q_Hz)[:, a]
        if exp.mas:
            s, _ = rotor.mas_lineshape(dirs, w, nu0, delta_ppm[:, a], Q_a, spin, K, p_eq, axis_Hz, exp.fwhm_Hz,
                                       exp.spin_rate_Hz)
        else:
            f = powder.site_freqs_Hz(dirs, nu0, delta_ppm[:, a], Q_a, spin=spin, mas=False)
            s = exchange.lineshape(f, K, p_eq, axis_Hz, exp.fwhm_Hz, w)
        # per ppm rather than per Hz, so panels on the ppm axis integrate to the nucleus count
        out[a] = s * nu0 * 1e-6
    return out


def mas_model(delta_ppm: np.ndarray, Q_Hz: np.ndarray | None, K: np.ndarray, exp: Experiment) -> str:
    """'finite-speed' or 'infinite-speed': what nucleus_spectra uses for these tensors (n_states, n_nuclei,
    3, 3) and jumps under exp (the most demanding nucleus decides)."""
    from .tensors import isotope_data, larmor_Hz

    if not exp.mas:
        return "static"
    nu0 = larmor_Hz(exp.isotope, exp.field_T)
    dirs, _ = powder.orientations(exp.orientation_scheme, exp.n_orientations)
    delta_ppm = np.asarray(delta_ppm, dtype=float)
    for a in range(delta_ppm.shape[1]):
        coef = rotor.frequency_harmonics(dirs, nu0, delta_ppm[:, a], None if Q_Hz is None else np.asarray(Q_Hz)[:, a],
                                         isotope_data(exp.isotope).spin)
        if not rotor.infinite_speed_valid(coef, K, exp.spin_rate_Hz, exp.fwhm_Hz):
            return "finite-speed"
    return "infinite-speed"


def four_panels(static: tuple, fast: tuple | None, K: np.ndarray, p_eq: np.ndarray, exp: Experiment) -> dict:
    """{'A'..'D': (n_nuclei, n_points)}; static/fast are (delta_ppm, Q_Hz) stacks over minima."""
    zero = np.zeros_like(K)
    panels = {"A": nucleus_spectra(*static, zero, p_eq, exp), "B": nucleus_spectra(*static, K, p_eq, exp)}
    if fast is not None:
        panels["C"] = nucleus_spectra(*fast, zero, p_eq, exp)
        panels["D"] = nucleus_spectra(*fast, K, p_eq, exp)
    return panels


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised overlap ⟨a, b⟩ / (‖a‖ ‖b‖) ∈ [−1, 1] (1 = identical shape)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    den = np.linalg.norm(a) * np.linalg.norm(b)
    if den == 0:
        raise ValueError("overlap of an all-zero spectrum")
    return float(a @ b / den)


def load_experimental(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Two-column text file (ppm, intensity); '#' comments; returned sorted by ppm."""
    data = np.loadtxt(path, comments="#", delimiter=None, ndmin=2)
    if data.shape[1] < 2 or len(data) < 2:
        raise ValueError(f"{path}: expected two columns (ppm, intensity)")
    order = np.argsort(data[:, 0])
    return data[order, 0], data[order, 1]


def similarity(axis_ppm: np.ndarray, spectrum: np.ndarray, exp_ppm: np.ndarray, exp_int: np.ndarray,
               window_ppm: tuple[float, float] | None = None) -> float:
    """Normalised overlap of the computed spectrum with the experiment on the experiment's points
    (optionally only within window_ppm, e.g. to leave out peaks the model does not describe)."""
    sel = (exp_ppm >= axis_ppm.min()) & (exp_ppm <= axis_ppm.max())
    if window_ppm is not None:
        sel &= (exp_ppm >= min(window_ppm)) & (exp_ppm <= max(window_ppm))
    if sel.sum() < 2:
        raise ValueError("experimental spectrum does not overlap the computed ppm window")
    return overlap(np.interp(exp_ppm[sel], axis_ppm, spectrum), exp_int[sel])


def plot_panels(path: str | Path, axis_ppm: np.ndarray, panels: dict, labels: list[str],
                experimental: tuple[np.ndarray, np.ndarray] | None = None, scores: dict | None = None) -> Path:
    """Stacked panels like Fig. 5.1: per-nucleus spectra in colour, total and experiment in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in PANELS if k in panels]
    fig, axes = plt.subplots(len(keys), 1, figsize=(6, 2.2 * len(keys)), sharex=True)
    axes = np.atleast_1d(axes)
    colours = plt.cm.tab10(np.arange(len(labels)) % 10)
    for ax, key in zip(axes, keys):
        spec = panels[key]
        total = spec.sum(axis=0)
        scale = 1.0 / total.max() if total.max() > 0 else 1.0
        for s, lab, c in zip(spec, labels, colours):
            ax.fill_between(axis_ppm, s * scale, color=c, alpha=0.35, lw=0, label=lab)
        ax.plot(axis_ppm, total * scale, color="0.35", lw=1.0, label="sum")
        if experimental is not None:
            ep, ei = experimental
            ax.plot(ep, ei / np.max(ei), color="k", lw=1.2, label="experiment")
        title = f"{key}  {PANELS[key]}"
        if scores and key in scores:
            title += f"   overlap {scores[key]:.3f}"
        ax.set_title(title, loc="left", fontsize=9)
        ax.set_yticks([])
    axes[-1].set_xlim(axis_ppm.max(), axis_ppm.min())
    axes[-1].set_xlabel("δ / ppm")
    axes[0].legend(fontsize=6, ncol=4, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    tmp.replace(path)
    return path
