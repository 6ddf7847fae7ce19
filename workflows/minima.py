"""De-duplication of minima by per-atom SOAP environments, shared by the NMR (thesis §5.3.1) and the
adsorbate-exploration (§3.4.3, appendix A "Filtering unique CO₂ adsorbate structures") workflows.

Two minima are the same when every compared atom of one has an environment within `threshold` of an
atom of the other: d = √(2 − 2 p·q) of normalised SOAP vectors, the largest over the compared atoms.
Per atom rather than one averaged vector per structure: an averaged descriptor cannot tell a hydroxyl
turned by 180° (NMR) or an adsorbate on a mirror site from the original.

`match_like_atoms` pairs the compared atoms of each element by the assignment of least total distance
(the two O of CO₂ may swap indices between minima and still be one minimum); without it atom i of one
minimum is compared with atom i of the other (NMR nuclei keep their labels). SOAP is periodic, so a
minimum whose adsorbate sits across the cell boundary is the same as its wrapped image.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

# Appendix A, "Filtering unique CO₂ adsorbate structures": soap add_species=T l_max=4 n_max=8
# atom_sigma=0.4 cutoff=6.0 cutoff_transition_width=0.5 central_weight=1.0
APPENDIX_A = {"cutoff_A": 6.0, "l_max": 4, "n_max": 8, "atom_sigma_A": 0.4, "transition_A": 0.5}


def descriptor(elements: Sequence[str], cutoff_A: float, l_max: int, n_max: int, atom_sigma_A: float,
               transition_A: float | None = None) -> str:
    """quippy SOAP string over all `elements` (what add_species=T expands to). transition_A None: quippy's
    default cutoff transition width."""
    zs = sorted({atomic_numbers[e] for e in elements})
    width = "" if transition_A is None else f" cutoff_transition_width={transition_A}"
    return (f"soap cutoff={cutoff_A}{width} l_max={l_max} n_max={n_max} atom_sigma={atom_sigma_A} "
            f"central_weight=1.0 n_species={len(zs)} species_Z={{{' '.join(map(str, zs))}}}")


def environments(atoms: Atoms, centres: Sequence[int], soap: str) -> np.ndarray:
    """Normalised SOAP vectors of the `centres` atoms, in that order."""
    from quippy.descriptors import Descriptor

    a = atoms.copy()
    a.set_constraint()
    if not a.pbc.any():  # quippy needs a cell; a molecule in a box is its own periodic image
        # ... in a box wide enough that no image lies within the cutoff (a molecule read without a cell too)
        side = np.ptp(a.positions, axis=0) + float(re.search(r"cutoff=([0-9.eE+-]+)", soap)[1]) + 1.0
        if a.cell.rank < 3 or (a.cell.lengths() < side).any() or not a.cell.orthorhombic:
            a.set_cell(np.maximum(side, a.cell.lengths() if a.cell.orthorhombic else 0.0))
            a.center()
        a.pbc = True
    out = Descriptor(soap).calc(a)
    rows = {int(c) - 1: v for c, v in zip(np.ravel(out["ci"]), np.asarray(out["data"], float))}  # ci: 1-based
    vectors = np.array([rows[i] for i in centres])
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def distance(p: np.ndarray, q: np.ndarray, symbols: Sequence[str], match_like_atoms: bool) -> float:
    """Largest per-atom distance between two minima's environments (rows of p and q: the same elements
    in the same order); like atoms paired by least total distance with `match_like_atoms`."""
    d = np.sqrt(np.clip(2.0 - 2.0 * np.clip(p @ q.T, -1.0, 1.0), 0.0, None))
    if not match_like_atoms:
        return float(np.diag(d).max())
    from scipy.optimize import linear_sum_assignment

    symbols = np.asarray(symbols)
    worst = 0.0
    for el in set(symbols):
        idx = np.where(symbols == el)[0]
        sub = d[np.ix_(idx, idx)]
        rows, cols = linear_sum_assignment(sub)
        worst = max(worst, float(sub[rows, cols].max()))
    return worst


def unique(structures: Sequence[Atoms], energies: Sequence[float], centres: Sequence[int], soap: str,
           threshold: float, match_like_atoms: bool = True) -> tuple[list[int], list[int]]:
    """Indices of the distinct minima, lowest energy first, and for every structure the index of the
    kept minimum it duplicates (itself if kept). A minimum is kept when it is at least `threshold` from
    every lower one already kept."""
    symbols = [structures[0].get_chemical_symbols()[i] for i in centres]
    for s in structures:
        if [s.get_chemical_symbols()[i] for i in centres] != symbols:
            raise ValueError("minima must have the same elements at the compared atoms")
    envs = [environments(s, centres, soap) for s in structures]
    kept: list[int] = []
    same_as = [-1] * len(structures)
    for i in np.argsort(energies, kind="stable"):
        i = int(i)
        match = next((k for k in kept if distance(envs[i], envs[k], symbols, match_like_atoms) < threshold), None)
        if match is None:
            kept.append(i)
            match = i
        same_as[i] = match
    return kept, same_as
