"""Geometry optimisation: on the MLFF (thesis §3.3 block 5: the MLFF minimum is the configuration
sampled) or on the reference (reaction endpoints relaxed for the validation NEB).

With the MLFF, σ along the trajectory is read from each step's evaluation; with `stop_on_breach` the
optimisation stops at the first per-atom σ > σ_thr and that configuration is returned as `final`.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.optimize import BFGS, FIRE, LBFGS

from reactforge.schemas.results import OptimiseResult
from reactforge.schemas.tasks import OptimiseSpec

from .context import TaskContext
from .errors import UnphysicalResult
from .mlff import current_sigma, load_mlff
from .structures import apply_fixed_atoms, plain_atoms, single_structure

OPTIMIZERS = {"BFGS": BFGS, "FIRE": FIRE, "LBFGS": LBFGS}


def max_force(atoms: Atoms) -> float:
    """Largest per-atom force norm with constraints applied (fixed atoms count as zero)."""
    return float(np.linalg.norm(atoms.get_forces(), axis=1).max())


def run(spec: OptimiseSpec, structures: list[Atoms], ctx: TaskContext) -> OptimiseResult:
    atoms = single_structure(structures, "optimise").copy()
    apply_fixed_atoms(atoms, spec.fixed_atoms)
    if spec.model is not None:
        atoms.calc = load_mlff(spec.model, ctx.device)
    else:
        from .references import SCFFallbackCalculator

        atoms.calc = SCFFallbackCalculator(spec.reference, atoms, ctx)

    energies: list[float] = []
    sigmas: list[float] = []
    opt = OPTIMIZERS[spec.optimizer](atoms, logfile=None)
    breached = False
    converged = False
    for converged in opt.irun(fmax=spec.fmax_eV_per_A, steps=spec.max_steps):
        energy = atoms.get_potential_energy()
        if not np.isfinite(energy) or not np.isfinite(atoms.get_forces()).all():
            raise UnphysicalResult(f"optimise: non-finite energy/forces at step {opt.nsteps}")
        energies.append(float(energy))
        sigmas.append(float(current_sigma(atoms).max()) if spec.model is not None else 0.0)
        if spec.stop_on_breach and sigmas[-1] > spec.sigma_thr_eV:
            breached = True
            break

    return OptimiseResult(
        final=plain_atoms(atoms),
        energy_eV=energies[-1],
        converged=bool(converged) and not breached,
        steps=opt.nsteps,
        fmax_eV_per_A=max_force(atoms),
        max_sigma_eV=max(sigmas),
        energies_eV=energies,
        breached=breached,
    )
