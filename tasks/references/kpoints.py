"""k-point grids and cell geometry shared by the plane-wave codes.

Convention: every spacing in the specs is in Å⁻¹ with the 2π included (|b_i| = 2π/a_i, as VASP's KSPACING
and the thesis's "0.25 Å⁻¹"): n_i = ceil(2π|b_i| / spacing), 1 along non-periodic directions. ASE's
`kspacing` of the espresso writer and CASTEP's kpoint_mp_spacing omit the 2π, so neither is used with the
spec's number directly.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import kptdensity2monkhorstpack

VACUUM_GAP_A = 5.0


def vacuum_directions(atoms: Atoms, min_gap_A: float = VACUUM_GAP_A) -> list[bool]:
    """Per cell vector: do the atoms leave a gap of at least min_gap_A across the planes it spans
    (a slab's vacuum, a molecule's box)? Such a direction needs a single k-point."""
    if len(atoms) == 0:
        return [False] * 3
    frac = np.sort(np.mod(atoms.get_scaled_positions(wrap=False), 1.0), axis=0)
    out = []
    for i in range(3):
        if not atoms.pbc[i]:  # a non-periodic direction may have no cell vector at all
            out.append(False)
            continue
        gap = np.diff(np.append(frac[:, i], frac[0, i] + 1.0)).max()  # widest empty stretch, fractional
        spacing = 1.0 / np.linalg.norm(atoms.cell.reciprocal()[i])  # of the planes the other two vectors span
        out.append(bool(gap * spacing >= min_gap_A))
    return out


def kpoint_grid(atoms: Atoms, spacing_per_A: float | None) -> tuple[int, int, int]:
    """Monkhorst-Pack grid with at most `spacing_per_A` (2π included) between k-points; one k-point
    along a non-periodic direction and across a vacuum gap (a slab's normal: VASP's KSPACING and
    ASE's density rule would give a 23 Å slab cell 2 k-points there, doubling the cost for nothing)."""
    if spacing_per_A is None or not atoms.pbc.any():
        return (1, 1, 1)
    grid = kptdensity2monkhorstpack(atoms, kptdensity=1.0 / spacing_per_A, even=False)
    return tuple(1 if vac else int(n) for n, vac in zip(grid, vacuum_directions(atoms)))


def is_periodic_3d(atoms: Atoms) -> bool:
    return bool(atoms.pbc.all() and atoms.cell.rank == 3)
