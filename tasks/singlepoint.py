"""Reference single point: energy, forces and (periodic 3D cells only) stress of one structure.

Failures are raised, never returned, so a failed call can not become a label:
- SCFNotConverged: pw.x "convergence NOT achieved", tblite "SCF not converged", CASTEP "max. SCF cycles
  performed but system has not reached the groundstate". The engine retries once with
  `spec.use_fallback=True`, which swaps in the reference's SCFFallback settings.
- TransientError: the launcher or the node failed (walltime, node loss, MPI start-up, killed, timeout).
- ReferenceSetupError / ReferenceFailed: code or pseudopotential missing, input error.
- UnphysicalResult: NaN/inf, |F| above spec.max_force_eV_per_A, a result for a different number of atoms.

energy_eV is the force-consistent (Mermin free) energy whose gradient the forces are, the quantity an
MLFF is trained on; with smearing it differs from the extrapolated 0 K energy by O(σ²).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError

from reactforge.schemas.results import SinglePointResult
from reactforge.schemas.tasks import SinglePointSpec

from .context import TaskContext
from .errors import SCFNotConverged, TaskError, UnphysicalResult
from .references import classify_failure, is_periodic_3d, make_calculator, reference_label, scf_record_failed


def run(spec: SinglePointSpec, structures: list[Atoms], ctx: TaskContext) -> SinglePointResult:
    if len(structures) != 1:
        raise ValueError(f"singlepoint takes exactly one structure, got {len(structures)}")
    atoms = structures[0]
    n_atoms = len(atoms)
    ref = spec.reference
    fallback = spec.use_fallback

    workdir = Path(ctx.workdir)
    work = atoms.copy()
    work.calc = make_calculator(ref, work, ctx, fallback=fallback, timeout_s=spec.reference_timeout_s)
    periodic = is_periodic_3d(atoms)
    start = time.perf_counter()
    try:
        try:
            energy = work.get_potential_energy(force_consistent=True)
        except PropertyNotImplementedError:
            energy = work.get_potential_energy()
        forces = np.asarray(work.get_forces(), dtype=float)
        stress = np.asarray(work.get_stress(voigt=True), dtype=float) if periodic else None
    except TaskError:
        raise
    except Exception as exc:  # every code reports its failures differently: classify, never pass through
        raise classify_failure(ref, workdir, exc) from exc
    wall = time.perf_counter() - start
    _check_scf_record(ref, workdir)
    _check_physical(spec, n_atoms, energy, forces, stress)

    return SinglePointResult(
        atoms=atoms.copy(),  # ASE's copy never carries the calculator
        energy_eV=float(energy),
        forces_eV_per_A=forces.tolist(),
        stress_eV_per_A3=None if stress is None else stress.tolist(),
        reference=reference_label(ref),
        scf_fallback_used=fallback,
        wall_s=wall,
    )


def _check_scf_record(ref, workdir: Path) -> None:
    if scf_record_failed(ref, workdir):
        raise SCFNotConverged(f"{ref.code}: SCF not converged in {workdir}")


def _check_physical(spec: SinglePointSpec, n_atoms: int, energy, forces: np.ndarray, stress) -> None:
    if forces.shape != (n_atoms, 3):
        raise UnphysicalResult(f"forces of shape {forces.shape} for {n_atoms} atoms: atoms lost or added")
    if not np.isfinite(energy):
        raise UnphysicalResult(f"non-finite energy {energy}")
    if not np.isfinite(forces).all():
        raise UnphysicalResult("non-finite forces")
    if stress is not None and not np.isfinite(stress).all():
        raise UnphysicalResult("non-finite stress")
    fmax = float(np.linalg.norm(forces, axis=1).max()) if n_atoms else 0.0
    if fmax > spec.max_force_eV_per_A:
        raise UnphysicalResult(f"max |F| = {fmax:.3g} eV/Å exceeds max_force_eV_per_A = {spec.max_force_eV_per_A}")
