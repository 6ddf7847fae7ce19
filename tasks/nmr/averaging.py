"""Fast regime (thesis §5.3.2, Eq. 5.10): motion faster than the interactions averages the tensors.

The effective tensor of minimum i is the element-wise mean over its MD samples j,
σ_eff^(i) = (1/M) Σ_j σ_j^(i)  (and likewise V_eff^(i)); the thesis writes the sum, meaning the mean.
Tensors must be in the common (lab/cell) frame: reorientation of a group then reduces the anisotropy.
Averaging the EFG tensor (not the C_Q values) is right for motion faster than the Larmor period, which
holds for the ps–ns motion an MD run samples.
"""
from __future__ import annotations

import numpy as np


def average_tensors(samples: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean over axis 0 of (M, N_atoms, 3, 3) tensors, optionally weighted (weights ≥ 0, any scale)."""
    samples = np.asarray(samples, dtype=float)
    if samples.ndim < 3 or samples.shape[-2:] != (3, 3):
        raise ValueError(f"expected (M, ..., 3, 3) tensors, got shape {samples.shape}")
    if len(samples) == 0:
        raise ValueError("no samples to average")
    if weights is None:
        return samples.mean(axis=0)
    w = np.asarray(weights, dtype=float)
    if w.shape != (len(samples),) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be one non-negative number per sample, not all zero")
    return np.tensordot(w / w.sum(), samples, axes=(0, 0))


def average_results(results):
    """Average σ (and V, if every sample has it) over NMRShieldingResult-like objects of one minimum.

    Returns (sigma_ppm, efg_au or None) with shape (N_atoms, 3, 3); atoms must be in the same order.
    """
    results = list(results)
    if not results:
        raise ValueError("no shielding results to average")
    n = {len(r.shielding_ppm) for r in results}
    if len(n) != 1:
        raise ValueError(f"samples have different atom counts {sorted(n)}")
    sigma = average_tensors(np.array([r.shielding_ppm for r in results]))
    efg = None
    if all(r.efg_au is not None for r in results):
        efg = average_tensors(np.array([r.efg_au for r in results]))
    return sigma, efg
