"""GFN-xTB through tblite, in process (the embedded default reference)."""
from __future__ import annotations

from pathlib import Path

from ase import Atoms
from ase.units import kB

from reactforge.schemas.tasks import XTBReference

from ..context import TaskContext
from ..errors import SCFNotConverged, TaskError

TBLITE_SCF_MARKER = "SCF not converged"


def calculator(ref: XTBReference, atoms: Atoms, ctx: TaskContext, fallback: bool = False,
               timeout_s: float | None = None):
    from tblite.ase import TBLite

    params = dict(
        method=ref.method,
        accuracy=ref.accuracy,
        electronic_temperature=ref.electronic_temperature_K,
        max_iterations=ref.max_iterations,
        verbosity=0,
    )
    if ref.charge:  # otherwise tblite's own default: the sum of the structure's initial charges
        params["charge"] = ref.charge
    if fallback:
        fb = ref.fallback
        # tblite's Broyden damping plays the role of the mixing β; a smearing width maps to T_el = w / k_B.
        params.update(max_iterations=fb.max_scf_steps, mixer_damping=fb.mixing_beta)
        if fb.smearing_width_eV is not None:
            params["electronic_temperature"] = fb.smearing_width_eV / kB
    return TBLite(**params)


def label(ref: XTBReference) -> str:
    return f"xtb:{ref.method}" + (f" charge {ref.charge:+d}" if ref.charge else "")


def scf_failed(workdir: Path) -> bool:
    return False  # tblite raises on an unconverged SCF and leaves no output to check afterwards


def classify(ref: XTBReference, workdir: Path, exc: Exception) -> TaskError | None:
    if TBLITE_SCF_MARKER in str(exc):
        return SCFNotConverged(f"xtb: {exc}")
    return None
