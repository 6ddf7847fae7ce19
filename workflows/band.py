"""What a band's images say about the path (block 6): the reference forces perpendicular to it.

A band is on the reference's minimum energy path when the reference force on each image has no
component across the band; the largest such force is what a reference NEB started from the band
would see at step 0 (the thesis's "converged without a single step", < 0.05 eV/Å). Block 6's energy
check alone passes a band that runs beside the MEP (a metal adatom's hop 0.18 Å off at the saddle:
energies within 50 meV, reference NEB step 0 at 0.39 eV/Å).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.geometry import find_mic


def tangents(images: Sequence[Atoms], energies: Sequence[float]) -> list[np.ndarray]:
    """Unit tangents of the interior images, ASE's "improvedtangent" (Henkelman & Jónsson 2000): the
    uphill neighbour's direction, energy-weighted at extrema. Displacements are minimum-image."""
    E = np.asarray(energies, dtype=float)
    cell, pbc = images[0].cell, images[0].pbc
    steps = [find_mic(b.positions - a.positions, cell, pbc)[0] for a, b in zip(images, images[1:])]
    out = []
    for i in range(1, len(images) - 1):
        minus, plus = steps[i - 1], steps[i]
        if E[i + 1] > E[i] > E[i - 1]:
            t = plus
        elif E[i + 1] < E[i] < E[i - 1]:
            t = minus
        else:
            big = max(abs(E[i + 1] - E[i]), abs(E[i - 1] - E[i]))
            small = min(abs(E[i + 1] - E[i]), abs(E[i - 1] - E[i]))
            t = plus * big + minus * small if E[i + 1] > E[i - 1] else plus * small + minus * big
        out.append(t / np.linalg.norm(t))
    return out


def perpendicular_fmax(images: Sequence[Atoms], energies: Sequence[float],
                       forces: dict[int, np.ndarray], fixed: Sequence[int] = (),
                       climb: bool = True) -> dict[int, float]:
    """Per interior image with reference forces (`forces`: band index -> (N, 3)), the largest per-atom
    force a reference NEB would feel at step 0 without springs: the force across the band, and at the
    band's highest interior image (with `climb`) the climbing-image force F − 2(F·τ)τ. Fixed atoms are
    left out. `energies` (the band's own, MLFF) choose the tangents and the climbing image."""
    tau = tangents(images, energies)
    top = int(np.argmax(np.asarray(energies)[1:-1])) + 1
    free = np.ones(len(images[0]), dtype=bool)
    free[list(fixed)] = False
    out = {}
    for i, F in sorted(forces.items()):
        if not 0 < i < len(images) - 1:
            continue  # the ends are minima, not part of the band's motion
        t = tau[i - 1].copy()
        t[~free] = 0.0
        t /= np.linalg.norm(t)
        F = np.where(free[:, None], np.asarray(F, dtype=float), 0.0)
        along = float(np.vdot(F, t))
        projected = F - (2.0 if climb and i == top else 1.0) * along * t
        out[i] = float(np.linalg.norm(projected, axis=1).max())
    return out
