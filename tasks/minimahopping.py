"""Minima hopping (Goedecker 2004) with the MLFF, through ase.optimize.minimahopping.

ASE's MinimaHopping writes its MD/optimisation trajectories (md00000.traj, qn00000.traj, ...) into
the current directory. Changing directory would redirect every thread of an engine worker, so the
search runs in a child Python process whose working directory is this task's scratch folder:
`python -m reactforge.tasks.minimahopping DIR` reads DIR/spec.json and DIR/input.traj and writes DIR/minima.traj.

A molecule or cluster (no periodic direction) is compared with earlier minima after the best rotation and
translation, atom i against atom i (`RigidCompare`): ASE pairs like atoms after translation only, so a
free molecule that turned during a hop's MD counts as a new minimum, the search cools down as if it had
found one and stops at n_minima copies of its start; and pairing like atoms would make a minimum whose
like atoms swapped roles (a hydroxyl turned by 180°) the same as its mirror partner.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import Trajectory, read, write

from reactforge.schemas.results import MinimaHoppingResult
from reactforge.schemas.tasks import MinimaHoppingSpec

from .context import TaskContext
from .structures import apply_fixed_atoms, plain_atoms, single_structure


class _EnoughMinima(Exception):
    """Raised once n_minima distinct minima are on record (MinimaHopping has no such stop rule)."""


class _Breach(Exception):
    """Raised by the first evaluation whose per-atom σ exceeds the spec's σ_thr (thesis §3.4.3: a hop
    whose MD breaches is interrupted and the configuration labelled)."""


def _watch_sigma(calc, threshold: float | None, folder: Path) -> dict:
    """Every evaluation of the search (hop MD and relaxations alike) goes through `calc.calculate`:
    MinimaHopping builds its own MD and optimiser, so the calculator is the one place that sees every
    configuration. The largest per-atom σ seen is kept; with a threshold, the first evaluation above it
    is written to breach.traj and stops the search."""
    calculate, seen = calc.calculate, {"max_sigma_eV": 0.0}

    def checked(*args, **kwargs):
        calculate(*args, **kwargs)
        sigma = np.asarray(calc.results["sigma_per_atom"], dtype=float)
        peak = float(sigma.max()) if np.isfinite(sigma).all() else np.inf
        seen["max_sigma_eV"] = max(seen["max_sigma_eV"], peak)
        if threshold is not None and peak > threshold:
            write(folder / "breach.traj", plain_atoms(calc.atoms))
            raise _Breach

    calc.calculate = checked
    return seen


class RigidCompare:
    """ASE's `ComparePositions` for a system without periodic directions: the largest displacement of any
    atom from its own counterpart after the rotation and translation that best superpose the two (Kabsch),
    whatever ASE asks for (its `translate` flag)."""

    def __init__(self, translate: bool = True):
        pass

    def __call__(self, atoms1: Atoms, atoms2: Atoms) -> float:
        from ase.build import minimize_rotation_and_translation

        fixed = Atoms(numbers=atoms1.numbers, positions=atoms1.positions)
        moved = Atoms(numbers=atoms2.numbers, positions=atoms2.positions)
        minimize_rotation_and_translation(fixed, moved)
        return float(np.linalg.norm(moved.positions - fixed.positions, axis=1).max())


def _hop(folder: Path) -> None:
    """The search itself (runs in the child process, cwd = folder)."""
    from ase.optimize import QuasiNewton
    from ase.optimize import minimahopping as ase_minimahopping
    from ase.optimize.minimahopping import MinimaHopping

    from .mlff import load_mlff

    spec = MinimaHoppingSpec.model_validate_json((folder / "spec.json").read_text())
    device = json.loads((folder / "device.json").read_text())["device"]
    atoms = read(folder / "input.traj")
    if not atoms.pbc.any():
        # MinimaHopping names ComparePositions in its own module; this process runs this one search only
        ase_minimahopping.ComparePositions = RigidCompare
    mlff = load_mlff(spec.model, device)
    atoms.calc = mlff
    (folder / "breach.traj").unlink(missing_ok=True)
    seen = _watch_sigma(mlff, spec.sigma_thr_eV, folder)

    class Relax(QuasiNewton):
        # MinimaHopping runs its optimiser without a step limit; on a poor MLFF surface the line
        # search can stall forever, so each local relaxation is capped.
        def run(self, fmax=0.05, steps=None):
            return super().run(fmax=fmax, steps=spec.max_optimisation_steps)

    class Hopping(MinimaHopping):
        def _record_minimum(self):
            super()._record_minimum()
            if len(self._minima) >= spec.n_minima:
                raise _EnoughMinima

    hopping = Hopping(
        atoms,
        T0=spec.T0_K,
        Ediff0=spec.Ediff0_eV,
        mdmin=spec.mdmin,
        fmax=spec.fmax_eV_per_A,
        timestep=spec.timestep_fs,
        minima_traj="minima.traj",
        logfile="hop.log",
        optimizer=Relax,
        rng=np.random.default_rng(spec.seed),
    )
    try:
        hopping(totalsteps=spec.max_hops + 1)  # ASE counts the initial relaxation as step 0
    except (_EnoughMinima, _Breach):
        pass
    del mlff.calculate  # the minima below are read, not searched

    # σ of each minimum, for sampling decisions (the minima file keeps energies, not σ). A search
    # stopped by its first relaxation has no minima file.
    sigmas = []
    if Path("minima.traj").exists():
        with Trajectory("minima.traj") as traj:
            for minimum in traj:
                minimum.calc = mlff
                minimum.get_potential_energy()
                sigmas.append(float(np.max(mlff.results["sigma_per_atom"])))
    tmp = folder / "sigma.json.tmp"
    tmp.write_text(json.dumps({"sigma_per_minimum_eV": sigmas, "hops": max(hopping._counter - 1, 0),
                               "max_sigma_eV": seen["max_sigma_eV"], "temperature_K": hopping._temperature}))
    tmp.rename(folder / "sigma.json")


def _search(folder: Path, atoms: Atoms, spec: MinimaHoppingSpec, ctx: TaskContext, fresh: bool):
    folder = folder.resolve()  # the child runs in `folder`: a relative name would resolve inside itself
    if fresh:  # nothing of an earlier, unresumable search may leak into this one
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sigma.json").unlink(missing_ok=True)
    if fresh:
        write(folder / "input.traj", atoms)
        # the child runs in `folder`: model files named relative to this process's directory would not be
        # found from there
        model = spec.model.model_copy(update={"paths": [str(Path(p).resolve()) for p in spec.model.paths]})
        (folder / "spec.json").write_text(spec.model_copy(update={"model": model}).model_dump_json())
    (folder / "device.json").write_text(json.dumps({"device": ctx.device}))
    env = dict(os.environ)
    env.update(ctx.env)
    env.setdefault("OMP_NUM_THREADS", str(ctx.threads))
    return subprocess.run(
        [sys.executable, "-m", "reactforge.tasks.minimahopping", str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )


def run(spec: MinimaHoppingSpec, structures: list[Atoms], ctx: TaskContext) -> MinimaHoppingResult:
    atoms = single_structure(structures, "minimahopping").copy()
    apply_fixed_atoms(atoms, spec.fixed_atoms)

    # The search runs in the task's checkpoint folder, shared by its attempts: ASE's MinimaHopping
    # resumes from the hop.log, minima and trajectories it finds there, so an attempt killed by its
    # walltime continues the search (with fresh random numbers) instead of starting again. A resume
    # that fails (e.g. a trajectory cut mid-write) is set aside and the search starts afresh.
    # An expired attempt that is still running holds the folder's lock: this one then searches alone.
    with ExitStack() as stack:
        folder = _claim(Path(ctx.checkpoint_dir) / "minimahopping", stack) if ctx.checkpoint_dir else None
        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="minimahopping-", dir=ctx.workdir))
        resumed = (folder / "hop.log").exists() and (folder / "input.traj").exists()
        if resumed:
            _touch_logged_md(folder)
        proc = _search(folder, atoms, spec, ctx, fresh=not resumed)
        if proc.returncode != 0 and resumed:
            resumed = False
            proc = _search(folder, atoms, spec, ctx, fresh=True)
        if proc.returncode != 0:
            raise RuntimeError(f"minimahopping search failed in {folder}:\n{proc.stderr[-3000:]}")
        result = _collect(folder, resumed)
    return result


def _touch_logged_md(folder: Path) -> None:
    """ASE logs "Molecular dynamics: mdN" before it creates mdN.traj, and its resume reads that file. A
    kill between the two leaves none, and the resume would fail and start the search again; an empty
    file is what ASE reads as an MD not yet begun, resumed from the last minimum."""
    for line in (folder / "hop.log").read_text(errors="replace").splitlines():
        if line.startswith("msg: Molecular dynamics:"):
            (folder / (line.split(":", 2)[2].strip() + ".traj")).touch(exist_ok=True)


def _claim(folder: Path, stack: ExitStack) -> Path | None:
    folder.mkdir(parents=True, exist_ok=True)
    handle = stack.enter_context(open(folder.parent / ".minimahopping.lock", "w"))
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return None
    return folder


def _collect(folder: Path, resumed: bool) -> MinimaHoppingResult:

    extra = json.loads((folder / "sigma.json").read_text())
    minima, energies = [], []
    if (folder / "minima.traj").exists():
        with Trajectory(folder / "minima.traj") as traj:
            for minimum in traj:
                energies.append(float(minimum.get_potential_energy()))
                minima.append(plain_atoms(minimum))
    breach = folder / "breach.traj"
    return MinimaHoppingResult(
        minima=minima,
        energies_eV=energies,
        sigma_per_minimum_eV=extra["sigma_per_minimum_eV"],
        hops=extra["hops"],
        resumed=resumed,
        breaching=plain_atoms(read(breach)) if breach.exists() else None,
        max_sigma_eV=extra.get("max_sigma_eV"),
        temperature_K=extra.get("temperature_K"),
    )


if __name__ == "__main__":
    _hop(Path(sys.argv[1]).resolve())
