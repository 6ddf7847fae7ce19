"""The MLFF's energy, forces and per-atom σ of each structure passed in: one model load, no dynamics.

Forces are ASE's `get_forces()`: atoms held by a structure's FixAtoms constraint get zero, as in the
reference labels (tasks/singlepoint.py), so the two compare like for like.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms

from reactforge.schemas.results import EvaluateResult
from reactforge.schemas.tasks import EvaluateSpec

from .context import TaskContext
from .errors import UnphysicalResult
from .mlff import load_mlff


def run(spec: EvaluateSpec, structures: list[Atoms], ctx: TaskContext) -> EvaluateResult:
    calc = load_mlff(spec.model, ctx.device)
    energies, forces, sigmas = [], [], []
    for k, atoms in enumerate(structures):
        a = atoms.copy()
        a.calc = calc
        energy = float(a.get_potential_energy())
        f = np.asarray(a.get_forces(), dtype=float)
        sigma = np.asarray(calc.results["sigma_per_atom"], dtype=float)
        if not (np.isfinite(energy) and np.isfinite(f).all()):
            raise UnphysicalResult(f"evaluate: non-finite energy or forces for structure {k}")
        energies.append(energy)
        forces.append(f.tolist())
        sigmas.append(sigma.tolist())
    return EvaluateResult(energies_eV=energies, forces_eV_per_A=forces, sigma_per_atom_eV=sigmas)
