"""Structure helpers shared by the task kinds: the one input structure, fixed atoms, plain result copies."""
from __future__ import annotations

from ase import Atoms
from ase.constraints import FixAtoms


def plain_atoms(atoms: Atoms, provenance: bool = True) -> Atoms:
    """A calculator-free copy with numbers, positions, cell and pbc only (no arrays such as momenta).

    With `provenance` it keeps the FixAtoms constraints and info, except the reference labels (info
    REF_*), which no longer describe moved positions; without, nothing else (what a fitter reads).
    """
    out = Atoms(
        numbers=atoms.numbers.copy(),
        positions=atoms.positions.copy(),
        cell=atoms.cell.copy(),
        pbc=atoms.pbc.copy(),
    )
    if provenance:
        out.set_constraint([c.copy() for c in atoms.constraints if isinstance(c, FixAtoms)])
        out.info = {k: v for k, v in atoms.info.items() if not str(k).startswith("REF_")}
    return out


def single_structure(structures: list[Atoms], kind: str) -> Atoms:
    if len(structures) != 1:
        raise ValueError(f"{kind} takes exactly one input structure, got {len(structures)}")
    return structures[0]


def apply_fixed_atoms(atoms: Atoms, fixed_atoms: list[int]) -> None:
    """Add FixAtoms for spec.fixed_atoms (keeping any constraints the structure already carries)."""
    if not fixed_atoms:
        return
    bad = [i for i in fixed_atoms if not 0 <= i < len(atoms)]
    if bad:
        raise ValueError(f"fixed_atoms: indices {bad} out of range for {len(atoms)} atoms")
    atoms.set_constraint(list(atoms.constraints) + [FixAtoms(indices=sorted(set(fixed_atoms)))])
