"""MLFF molecular dynamics interrupted at the first per-atom σ > σ_thr (thesis §3.2).

The σ of a step is the one the calculator computed for the forces of that step
(`results["sigma_per_atom"]`), so checking costs no extra evaluation. If the threshold is never
breached, the highest-σ configuration of the segment is the one sampled.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from reactforge.schemas.results import MDResult
from reactforge.schemas.tasks import MDSpec

from reactforge.schemas.base import atoms_from_text, atoms_to_text

from .checkpoint import Checkpoint, restore_rng, rng_state
from .context import TaskContext
from .errors import UnphysicalResult
from .mlff import current_sigma, load_mlff
from .structures import apply_fixed_atoms, plain_atoms, single_structure


def _finite(atoms: Atoms) -> bool:
    calc = atoms.calc
    return bool(
        np.isfinite(atoms.positions).all()
        and np.isfinite(calc.results.get("energy", np.nan))
        and np.isfinite(calc.results.get("forces", np.array([np.nan]))).all()
    )


def make_dynamics(atoms: Atoms, spec: MDSpec, rng: np.random.Generator):
    dt = spec.timestep_fs * units.fs
    if spec.ensemble == "nve":
        return VelocityVerlet(atoms, timestep=dt, logfile=None)
    # fixcm=False: the centre-of-mass fix of ASE's Langevin biases the NVT distribution (ASE ≥ 3.28)
    return Langevin(
        atoms,
        timestep=dt,
        temperature_K=spec.temperature_K,
        friction=spec.friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
        logfile=None,
    )


def run(spec: MDSpec, structures: list[Atoms], ctx: TaskContext) -> MDResult:
    atoms = single_structure(structures, "md").copy()
    apply_fixed_atoms(atoms, spec.fixed_atoms)
    atoms.calc = load_mlff(spec.model, ctx.device)

    rng = np.random.default_rng(spec.seed)
    checkpoint = Checkpoint(ctx, "md")
    state = checkpoint.load(atoms)
    if state is None:
        thermalize_momenta(atoms, temperature_K=spec.temperature_K, rng=rng)
        state = {"step": 0, "trace": [], "trace_steps": [], "best_sigma": None, "best_step": 0}
        best = None
    else:
        restore_rng(rng, state["rng"])
        best = atoms_from_text(state["best"]) if state["best_sigma"] is not None else None
    start = state["step"]
    dyn = make_dynamics(atoms, spec, rng)
    dyn.nsteps = start
    atoms.get_forces()  # ASE evaluates the first step only when it starts from step 0

    trace: list[list[float]] = state["trace"]
    trace_steps: list[int] = state["trace_steps"]
    best_sigma = -np.inf if state["best_sigma"] is None else state["best_sigma"]
    best_step = state["best_step"]
    previous = None  # (configuration, step) of the last step with finite energy and forces
    breached = False

    for _ in dyn.irun(steps=spec.steps - start):
        step = dyn.nsteps
        if not _finite(atoms):
            if previous is None:
                raise UnphysicalResult("md: the MLFF gives non-finite energy/forces for the input structure")
            # The MLFF left its domain so badly that the energy is no longer a number: the last
            # finite configuration is the one worth labelling.
            breached = True
            sampled, step_sampled = previous
            break
        snapshot = plain_atoms(atoms)
        previous = (snapshot, step)
        if step == start and start > 0:
            continue  # the checkpointed step, already checked before it was saved
        if step % spec.check_every == 0:
            sigma = current_sigma(atoms)
            peak = float(sigma.max()) if np.isfinite(sigma).all() else np.inf
            trace.append(sigma.tolist())
            trace_steps.append(step)
            if peak > best_sigma:
                best_sigma, best, best_step = peak, snapshot, step
            if peak > spec.sigma_thr_eV:
                breached, sampled, step_sampled = True, snapshot, step
                break
        if checkpoint.due() and step < spec.steps:
            checkpoint.save(atoms, {
                "step": step, "rng": rng_state(rng), "trace": trace, "trace_steps": trace_steps,
                "best_sigma": None if best is None else best_sigma, "best_step": best_step,
                "best": None if best is None else atoms_to_text(best),
            })
    else:
        sampled, step_sampled = best, best_step

    return MDResult(
        sampled=sampled,
        breached=breached,
        step_sampled=step_sampled,
        steps_run=dyn.nsteps,
        max_sigma_eV=best_sigma,
        sigma_trace_eV=trace,
        trace_steps=trace_steps,
        final=previous[0],
        resumed_from_step=start,
    )
