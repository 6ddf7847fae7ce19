"""One umbrella-sampling window: MLFF Langevin MD under a harmonic restraint on the distance d(i, j)
(thesis §3.4.2: 75 eV/Å², 10 ps equilibration, 110 ps production, 1 fs). The free-energy analysis
(umbrella integration over the windows) is done elsewhere from the CV time series returned here.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.constraints import FixConstraint
from ase.geometry import find_mic
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

from reactforge.schemas.results import UmbrellaWindowResult
from reactforge.schemas.tasks import UmbrellaWindowSpec

from .checkpoint import Checkpoint, restore_rng, rng_state
from .context import TaskContext
from .errors import UnphysicalResult
from .mlff import current_sigma, load_mlff
from .structures import apply_fixed_atoms, plain_atoms, single_structure


class DistanceRestraint(FixConstraint):
    """Bias k/2 (d(i, j) − d0)² on one interatomic distance (minimum-image), as an ASE constraint
    that adds energy and forces, so every ASE integrator applies it.

    ASE's own Hookean constraint is one-sided (no force below its threshold length), which cannot
    hold a window on the compressed side of its centre; this one acts in both directions.
    """

    def __init__(self, i: int, j: int, centre_A: float, spring_eV_per_A2: float):
        self.i, self.j = int(i), int(j)
        self.centre = float(centre_A)
        self.k = float(spring_eV_per_A2)

    def distance_vector(self, atoms: Atoms) -> tuple[np.ndarray, float]:
        vec, dist = find_mic(atoms.positions[self.j] - atoms.positions[self.i], atoms.cell, atoms.pbc)
        return vec, float(dist)

    def get_removed_dof(self, atoms):
        return 0

    def adjust_positions(self, atoms, newpositions):
        pass

    def adjust_momenta(self, atoms, momenta):
        pass  # a bias potential, not a holonomic constraint: momenta are left alone

    def adjust_forces(self, atoms, forces):
        vec, dist = self.distance_vector(atoms)
        f = -self.k * (dist - self.centre) * vec / dist  # force on atom j
        forces[self.j] += f
        forces[self.i] -= f

    def adjust_potential_energy(self, atoms):
        _, dist = self.distance_vector(atoms)
        return 0.5 * self.k * (dist - self.centre) ** 2

    def todict(self):
        return {
            "name": "DistanceRestraint",
            "kwargs": {"i": self.i, "j": self.j, "centre_A": self.centre, "spring_eV_per_A2": self.k},
        }

    def copy(self):
        return DistanceRestraint(self.i, self.j, self.centre, self.k)

    def __repr__(self):
        return f"DistanceRestraint({self.i}, {self.j}, centre={self.centre} Å, k={self.k} eV/Å²)"


def run(spec: UmbrellaWindowSpec, structures: list[Atoms], ctx: TaskContext) -> UmbrellaWindowResult:
    atoms = single_structure(structures, "umbrellawindow").copy()
    n = len(atoms)
    for name in ("atom_i", "atom_j"):
        if getattr(spec, name) >= n:
            raise ValueError(f"{name}: index {getattr(spec, name)} out of range for {n} atoms")
    if spec.atom_i == spec.atom_j:
        raise ValueError("atom_i and atom_j must differ")
    apply_fixed_atoms(atoms, spec.fixed_atoms)
    restraint = DistanceRestraint(spec.atom_i, spec.atom_j, spec.centre_A, spec.spring_eV_per_A2)
    atoms.set_constraint([restraint] + list(atoms.constraints))
    atoms.calc = load_mlff(spec.model, ctx.device)

    rng = np.random.default_rng(spec.seed)
    checkpoint = Checkpoint(ctx, "umbrellawindow")
    state = checkpoint.load(atoms)
    if state is None:
        thermalize_momenta(atoms, temperature_K=spec.temperature_K, rng=rng)
        state = {"step": 0, "cv": [], "max_sigma": 0.0}
    else:
        restore_rng(rng, state["rng"])
    start = state["step"]
    dyn = Langevin(
        atoms,
        timestep=spec.timestep_fs * units.fs,
        temperature_K=spec.temperature_K,
        friction=spec.friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
        logfile=None,
    )
    dyn.nsteps = start
    atoms.get_forces()  # ASE evaluates the first step only when it starts from step 0

    cv: list[float] = state["cv"]
    max_sigma = state["max_sigma"]
    n_eq = spec.equilibration_steps
    n_total = n_eq + spec.production_steps
    for _ in dyn.irun(steps=n_total - start):
        energy = atoms.calc.results.get("energy", np.nan)
        if not (np.isfinite(energy) and np.isfinite(atoms.positions).all()):
            raise UnphysicalResult(f"umbrellawindow: non-finite MLFF energy at step {dyn.nsteps}")
        if dyn.nsteps == start and start > 0:
            continue  # the checkpointed step, already sampled before it was saved
        step = dyn.nsteps - n_eq  # production step
        if step > 0 and step % spec.sample_every == 0:
            cv.append(restraint.distance_vector(atoms)[1])
            max_sigma = max(max_sigma, float(current_sigma(atoms).max()))
        if checkpoint.due() and dyn.nsteps < n_total:
            checkpoint.save(atoms, {"step": dyn.nsteps, "rng": rng_state(rng), "cv": cv, "max_sigma": max_sigma})

    final = plain_atoms(atoms)  # keeps FixAtoms, drops the restraint
    return UmbrellaWindowResult(
        centre_A=spec.centre_A,
        spring_eV_per_A2=spec.spring_eV_per_A2,
        temperature_K=spec.temperature_K,
        cv_A=cv,
        final=final,
        max_sigma_eV=max_sigma,
        sample_interval_fs=spec.sample_every * spec.timestep_fs,
        resumed_from_step=start,
    )
