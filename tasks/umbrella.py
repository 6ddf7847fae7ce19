"""One umbrella-sampling window: MLFF Langevin MD under a harmonic restraint on ξ, the distance d(i, j)
or the difference d(i, j) − d(j, k) (thesis §3.4.2: 75 eV/Å², 10 ps equilibration, 110 ps production,
1 fs). The free-energy analysis (workflows/free_energy_analysis.py) works on the ξ series returned here.

With `sigma_thr_eV` the per-atom σ of every sampled production frame is checked: frames above it are
returned (at most `max_breaching_frames`, `breach_spacing_steps` apart) for labelling, and the window
stops once it holds them all, since its samples belong to a model about to be retrained.
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

    def distance_vector(self, atoms: Atoms, i: int | None = None, j: int | None = None) -> tuple[np.ndarray, float]:
        i, j = (self.i, self.j) if i is None else (i, j)
        vec, dist = find_mic(atoms.positions[j] - atoms.positions[i], atoms.cell, atoms.pbc)
        return vec, float(dist)

    def value_and_gradient(self, atoms: Atoms) -> tuple[float, dict[int, np.ndarray]]:
        """ξ and its non-zero gradients ∂ξ/∂r_a."""
        vec, dist = self.distance_vector(atoms)
        return dist, {self.j: vec / dist, self.i: -vec / dist}

    def value(self, atoms: Atoms) -> float:
        return self.value_and_gradient(atoms)[0]

    def get_removed_dof(self, atoms):
        return 0

    def adjust_positions(self, atoms, newpositions):
        pass

    def adjust_momenta(self, atoms, momenta):
        pass  # a bias potential, not a holonomic constraint: momenta are left alone

    def adjust_forces(self, atoms, forces):
        xi, grad = self.value_and_gradient(atoms)
        for a, g in grad.items():
            forces[a] -= self.k * (xi - self.centre) * g

    def adjust_potential_energy(self, atoms):
        return 0.5 * self.k * (self.value(atoms) - self.centre) ** 2

    def todict(self):
        return {
            "name": "DistanceRestraint",
            "kwargs": {"i": self.i, "j": self.j, "centre_A": self.centre, "spring_eV_per_A2": self.k},
        }

    def copy(self):
        return DistanceRestraint(self.i, self.j, self.centre, self.k)

    def __repr__(self):
        return f"DistanceRestraint({self.i}, {self.j}, centre={self.centre} Å, k={self.k} eV/Å²)"


class DistanceDifferenceRestraint(DistanceRestraint):
    """Bias k/2 (ξ − ξ0)² on ξ = d(i, j) − d(j, k): atom j moving from i to k (a transfer, a migration)."""

    def __init__(self, i: int, j: int, k: int, centre_A: float, spring_eV_per_A2: float):
        super().__init__(i, j, centre_A, spring_eV_per_A2)
        self.third = int(k)

    def value_and_gradient(self, atoms: Atoms) -> tuple[float, dict[int, np.ndarray]]:
        v1, d1 = self.distance_vector(atoms, self.i, self.j)
        v2, d2 = self.distance_vector(atoms, self.j, self.third)
        u1, u2 = v1 / d1, v2 / d2
        return d1 - d2, {self.i: -u1, self.j: u1 + u2, self.third: -u2}

    def todict(self):
        return {
            "name": "DistanceDifferenceRestraint",
            "kwargs": {"i": self.i, "j": self.j, "k": self.third, "centre_A": self.centre, "spring_eV_per_A2": self.k},
        }

    def copy(self):
        return DistanceDifferenceRestraint(self.i, self.j, self.third, self.centre, self.k)

    def __repr__(self):
        return (f"DistanceDifferenceRestraint({self.i}, {self.j}, {self.third}, centre={self.centre} Å, "
                f"k={self.k} eV/Å²)")


def make_restraint(spec: UmbrellaWindowSpec) -> DistanceRestraint:
    if spec.cv == "distance_difference":
        return DistanceDifferenceRestraint(spec.atom_i, spec.atom_j, spec.atom_k, spec.centre_A, spec.spring_eV_per_A2)
    return DistanceRestraint(spec.atom_i, spec.atom_j, spec.centre_A, spec.spring_eV_per_A2)


def run(spec: UmbrellaWindowSpec, structures: list[Atoms], ctx: TaskContext) -> UmbrellaWindowResult:
    atoms = single_structure(structures, "umbrellawindow").copy()
    n = len(atoms)
    for name in ("atom_i", "atom_j", "atom_k"):
        if getattr(spec, name) is not None and getattr(spec, name) >= n:
            raise ValueError(f"{name}: index {getattr(spec, name)} out of range for {n} atoms")
    if spec.atom_i == spec.atom_j:
        raise ValueError("atom_i and atom_j must differ")
    apply_fixed_atoms(atoms, spec.fixed_atoms)
    restraint = make_restraint(spec)
    atoms.set_constraint([restraint] + list(atoms.constraints))
    atoms.calc = load_mlff(spec.model, ctx.device)

    rng = np.random.default_rng(spec.seed)
    checkpoint = Checkpoint(ctx, "umbrellawindow")
    state = checkpoint.load(atoms)
    if state is None:
        thermalize_momenta(atoms, temperature_K=spec.temperature_K, rng=rng)
        state = {"step": 0, "cv": [], "max_sigma": 0.0, "breaching": [], "breach_steps": []}
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
    # breaching frames as positions (the checkpoint's state is JSON) and the steps they were taken at
    breaching: list[list[list[float]]] = state.get("breaching", [])
    breach_steps: list[int] = state.get("breach_steps", [])
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
            cv.append(restraint.value(atoms))
            sigma = float(current_sigma(atoms).max())
            max_sigma = max(max_sigma, sigma)
            if (spec.sigma_thr_eV is not None and sigma > spec.sigma_thr_eV
                    and (not breach_steps or dyn.nsteps - breach_steps[-1] >= spec.breach_spacing_steps)):
                breaching.append(atoms.positions.tolist())
                breach_steps.append(dyn.nsteps)
                if len(breaching) >= spec.max_breaching_frames:
                    break  # these samples belong to a model about to be retrained
        if checkpoint.due() and dyn.nsteps < n_total:
            checkpoint.save(atoms, {"step": dyn.nsteps, "rng": rng_state(rng), "cv": cv, "max_sigma": max_sigma,
                                    "breaching": breaching, "breach_steps": breach_steps})

    final = plain_atoms(atoms)  # keeps FixAtoms, drops the restraint
    frames = []
    for positions in breaching:
        frame = final.copy()
        frame.positions = positions
        frames.append(frame)
    return UmbrellaWindowResult(
        centre_A=spec.centre_A,
        spring_eV_per_A2=spec.spring_eV_per_A2,
        temperature_K=spec.temperature_K,
        cv_A=cv,
        final=final,
        max_sigma_eV=max_sigma,
        sample_interval_fs=spec.sample_every * spec.timestep_fs,
        resumed_from_step=start,
        breached=bool(frames),
        breaching=frames,
        steps_run=dyn.nsteps,
    )
