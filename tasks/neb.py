"""MLFF nudged elastic band with ASE (thesis §3.3 block 6 and §3.4.2).

IDPP initial path, a first relaxation without climbing image, then the climbing image ("after initial
convergence we use the climbing image NEB"). With `precon="Exp"` the band uses ASE's preconditioned
spline/string NEB (Makri, Ortner & Kermode 2019), relaxed with ASE's NEBOptimizer (adaptive ODE12r),
the optimiser ASE documents for it; otherwise `optimizer` (FIRE by default; BFGS and LBFGS with a
0.1 Å trust radius are there too, but neither was better over a whole quickstart run).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.geometry import find_mic
from ase.mep import NEB
from ase.mep.neb import NEBOptimizer
from ase.optimize import FIRE
from ase.optimize.precon import PreconImages

from reactforge.schemas.results import NEBResult
from reactforge.schemas.tasks import NEBSpec

from .context import TaskContext
from .errors import UnphysicalResult
from .mlff import load_mlff
from .optimise import OPTIMIZERS
from .structures import apply_fixed_atoms, plain_atoms


class ImageCalculator(Calculator):
    """One image's view of a shared MLFF, with its own result cache.

    ASE caches results per calculator instance, so images that share one calculator re-evaluate on
    every force request (ASE's optimisers ask several times per step). Loading one GAP per image
    would multiply memory and start-up time instead; this wrapper keeps one model and one cache per image.
    """

    implemented_properties = ["energy", "free_energy", "forces", "sigma_per_atom"]

    def __init__(self, mlff: Calculator):
        super().__init__()
        self.mlff = mlff

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms.copy()
        a.calc = self.mlff
        energy = a.get_potential_energy(apply_constraint=False)
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": a.get_forces(apply_constraint=False),
            "sigma_per_atom": np.array(self.mlff.results["sigma_per_atom"], dtype=float),
        }


def initial_band(spec: NEBSpec, structures: list[Atoms]) -> list[Atoms]:
    """Two endpoints (interpolated here) or a whole starting band of n_images + 2 configurations."""
    n = spec.n_images + 2
    if len(structures) not in (2, n):
        raise ValueError(
            f"neb takes 2 endpoints or a band of n_images + 2 = {n} structures, got {len(structures)}"
        )
    first = structures[0]
    for s in structures[1:]:
        if len(s) != len(first) or (s.numbers != first.numbers).any():
            raise ValueError("neb: all structures must have the same atoms in the same order")
        if not np.allclose(s.cell, first.cell) or (s.pbc != first.pbc).any():
            raise ValueError("neb: all structures must share cell and pbc (fixed-cell NEB)")
    if spec.fixed_atoms:
        idx = [i for i in spec.fixed_atoms if 0 <= i < len(first)]
        if idx and not np.allclose(first.positions[idx], structures[-1].positions[idx], atol=1e-6):
            raise ValueError("neb: fixed_atoms differ in position between the endpoints")

    if len(structures) == n:
        images = [s.copy() for s in structures]
    else:
        images = [structures[0].copy()] + [structures[0].copy() for _ in range(spec.n_images)]
        images.append(structures[1].copy())
    for image in images:
        apply_fixed_atoms(image, spec.fixed_atoms)

    if len(structures) == 2:
        # A plain NEB only for the interpolation, so the IDPP pre-relaxation does not build (and
        # keep) the preconditioners of the real band from the straight-line guess.
        NEB(images, method="improvedtangent").interpolate(
            method=spec.interpolation, mic=bool(first.pbc.any()), apply_constraint=False
        )
        if spec.rattle_A > 0:  # off the endpoints' mirror plane (NEBSpec.rattle_A); the same rattle every try
            rng = np.random.default_rng(0)
            free = np.setdiff1d(np.arange(len(first)), spec.fixed_atoms)
            for image in images[1:-1]:
                image.positions[free] += rng.normal(0.0, spec.rattle_A, (len(free), 3))
    if first.pbc.any():
        make_continuous(images)
    return images


def make_continuous(images: list[Atoms]) -> None:
    """Shift atoms by lattice vectors so that each image's positions follow the previous image's
    (the same configurations). ASE's preconditioned spline fits its splines to the raw positions
    (PreconImages.get_coordinates takes only the arc length through the minimum image), so a band whose
    last image is wrapped back through the cell has a jump of a whole cell vector in its spline and
    never converges (an adatom hop across the cell edge; ASE 3.29)."""
    for previous, image in zip(images, images[1:]):
        step, _ = find_mic(image.positions - previous.positions, image.cell, image.pbc)
        image.positions = previous.positions + step


class ClimbingNEBOptimizer(NEBOptimizer):
    """ASE's NEBOptimizer whose residual also covers the climbing image.

    `NEB.get_residual()` leaves the climbing image out, so the ODE solver could declare a
    climbing-image band converged while the image at the top still feels a large force.
    """

    def get_residual(self, F=None, X=None):
        # with a single interior image that climbs, ASE's residual list is empty
        residual = max(self.neb.residuals or [0.0])
        if self.neb.climb and F is not None:
            i = self.neb.imax
            if 0 < i < self.neb.nimages - 1:
                ci_force = np.asarray(F).reshape(self.neb.nimages - 2, -1)[i - 1]
                residual = max(residual, self.neb.precon.get_residual(i, ci_force))
        return residual


def _optimiser(neb: NEB, spec: NEBSpec):
    if spec.precon is not None:
        return ClimbingNEBOptimizer(neb, method="ode", logfile=None)
    if spec.optimizer == "FIRE":
        return FIRE(neb, logfile=None)
    # a band is many loosely coupled images: a 0.1 Å trust radius keeps a quasi-Newton step from
    # throwing an image across the surface while the Hessian estimate is still poor
    return OPTIMIZERS[spec.optimizer](neb, logfile=None, maxstep=0.1)


def band_fmax(neb: NEB, opt) -> float:
    """The optimiser's own convergence measure on the final band, eV/Å: the largest per-atom NEB force
    (FIRE, BFGS, LBFGS), or ASE's preconditioned residual with the climbing image included (precon)."""
    forces = neb.get_forces()  # images' results are cached: no new evaluations
    if isinstance(opt, NEBOptimizer):
        return float(opt.get_residual(F=forces))
    return float(np.linalg.norm(forces, axis=1).max())


def _attach_calculators(spec: NEBSpec, images: list[Atoms], ctx: TaskContext) -> None:
    """One MLFF shared through per-image caches, or one reference calculator per image (each in its
    own directory: file-based codes such as pw.x must not share input/output files)."""
    if spec.model is not None:
        mlff = load_mlff(spec.model, ctx.device)
        for image in images:
            image.calc = ImageCalculator(mlff)
        return
    from dataclasses import replace

    from .references import SCFFallbackCalculator

    for k, image in enumerate(images):
        image_ctx = replace(ctx, workdir=Path(ctx.workdir) / f"image{k:02d}")
        image.calc = SCFFallbackCalculator(spec.reference, image, image_ctx)


def count_calculations(images: list[Atoms]) -> list[int]:
    """Count every real calculation of each image's calculator (ASE's cache answers repeated requests
    without calling `calculate`). Returns a one-element list updated in place."""
    counter = [0]
    for image in images:
        calc = image.calc
        inner = calc.calculate

        def counted(*args, _inner=inner, **kwargs):
            counter[0] += 1
            return _inner(*args, **kwargs)

        calc.calculate = counted
    return counter


def initial_fmax(images: list[Atoms], spec: NEBSpec) -> float:
    """Largest projected NEB force (climbing image included) on the starting band, eV/Å: the thesis's
    test of a reference NEB started from the MLFF path ("converged without a single step")."""
    probe = NEB(images, k=spec.spring_k_eV_per_A2, climb=spec.climb, method="improvedtangent")
    return float(np.linalg.norm(probe.get_forces(), axis=1).max())


def run(spec: NEBSpec, structures: list[Atoms], ctx: TaskContext) -> NEBResult:
    images = initial_band(spec, structures)
    _attach_calculators(spec, images, ctx)
    evaluations = count_calculations(images)
    fmax_initial = initial_fmax(images, spec) if spec.reference is not None or len(structures) > 2 else None

    precon = spec.precon
    if precon is not None:
        precon = PreconImages(precon, images)
    neb = NEB(images, k=spec.spring_k_eV_per_A2, climb=False, method=spec.method, precon=precon)
    # Without climbing until climb_start_fmax, but for at most half the steps: a band that never gets
    # there would otherwise end without a climbing image, its top image below the saddle (the
    # quickstart's exothermic H2 split read 0.07 eV for a 0.13 eV barrier), and block 6 would label
    # images that never sample the saddle region.
    if spec.climb:
        stages = [(False, max(spec.climb_start_fmax_eV_per_A, spec.fmax_eV_per_A), spec.max_steps // 2),
                  (True, spec.fmax_eV_per_A, spec.max_steps)]
    else:
        stages = [(False, spec.fmax_eV_per_A, spec.max_steps)]

    steps, climbing_steps, converged, opt = 0, 0, False, None
    for climb, fmax, until in stages:
        budget = until - steps
        if budget <= 0:
            continue
        neb.climb = climb
        opt = _optimiser(neb, spec)
        converged = bool(opt.run(fmax=fmax, steps=budget))
        steps += opt.nsteps
        climbing_steps += opt.nsteps if climb else 0

    energies, sigmas, image_forces = [], [], []
    for image in images:
        energy = image.get_potential_energy(apply_constraint=False)
        forces = image.get_forces(apply_constraint=False)
        if not (np.isfinite(energy) and np.isfinite(forces).all()):
            raise UnphysicalResult("neb: non-finite MLFF energy/forces on an image")
        energies.append(float(energy))
        image_forces.append(np.asarray(forces, dtype=float).tolist())
        sigmas.append(float(np.max(image.calc.results.get("sigma_per_atom", [0.0]))))
    fmax = band_fmax(neb, opt)

    top = int(np.argmax(energies[1:-1])) + 1
    return NEBResult(
        images=[plain_atoms(a) for a in images],
        energies_eV=energies,
        forward_barrier_eV=max(energies) - energies[0],
        reaction_energy_eV=energies[-1] - energies[0],
        converged=converged,
        steps=steps,
        max_sigma_eV=max(sigmas),
        fmax_eV_per_A=fmax,
        sigma_per_image_eV=sigmas,
        climbing_image=top if spec.climb else None,
        climbing_steps=climbing_steps,
        fmax_initial_eV_per_A=fmax_initial,
        # a calculation redone with the SCF fallback settings is a second reference call
        energy_evaluations=evaluations[0] + sum(getattr(a.calc, "fallback_calls", 0) for a in images),
        forces_eV_per_A=image_forces,
    )
