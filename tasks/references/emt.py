"""ASE's effective-medium theory: fcc metal surfaces in seconds (protocol development, tests)."""
from __future__ import annotations

from pathlib import Path

from ase import Atoms

from reactforge.schemas.tasks import EMTReference

from ..context import TaskContext
from ..errors import TaskError


def calculator(ref: EMTReference, atoms: Atoms, ctx: TaskContext, fallback: bool = False,
               timeout_s: float | None = None):
    from ase.calculators.emt import EMT

    return EMT()


def label(ref: EMTReference) -> str:
    return ref.code


def scf_failed(workdir: Path) -> bool:
    return False  # no SCF


def classify(ref: EMTReference, workdir: Path, exc: Exception) -> TaskError | None:
    return None
