"""Minima hopping (Goedecker 2004) with the MLFF, through ase.optimize.minimahopping.

ASE's MinimaHopping writes its MD/optimisation trajectories (md00000.traj, qn00000.traj, ...) into
the current directory. Changing directory would redirect every thread of an engine worker, so the
search runs in a child Python process whose working directory is this task's scratch folder:
`python -m reactforge.tasks.minimahopping DIR` reads DIR/spec.json and DIR/input.traj and writes DIR/minima.traj.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import Trajectory, write

from reactforge.schemas.results import MinimaHoppingResult
from reactforge.schemas.tasks import MinimaHoppingSpec

from .context import TaskContext
from .structures import apply_fixed_atoms, plain_atoms, single_structure


class _EnoughMinima(Exception):
    """Raised once n_minima distinct minima are on record (MinimaHopping has no such stop rule)."""


def _hop(folder: Path) -> None:
    """The search itself (runs in the child process, cwd = folder)."""
    from ase.io import read
    from ase.optimize import QuasiNewton
    from ase.optimize.minimahopping import MinimaHopping

    from .mlff import load_mlff

    spec = MinimaHoppingSpec.model_validate_json((folder / "spec.json").read_text())
    device = json.loads((folder / "device.json").read_text())["device"]
    atoms = read(folder / "input.traj")
    mlff = load_mlff(spec.model, device)
    atoms.calc = mlff

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
    except _EnoughMinima:
        pass

    # σ of each minimum, for sampling decisions (the minima file keeps energies, not σ).
    sigmas = []
    with Trajectory("minima.traj") as traj:
        for minimum in traj:
            minimum.calc = mlff
            minimum.get_potential_energy()
            sigmas.append(float(np.max(mlff.results["sigma_per_atom"])))
    tmp = folder / "sigma.json.tmp"
    tmp.write_text(json.dumps({"sigma_per_minimum_eV": sigmas, "hops": max(hopping._counter - 1, 0)}))
    tmp.rename(folder / "sigma.json")


def run(spec: MinimaHoppingSpec, structures: list[Atoms], ctx: TaskContext) -> MinimaHoppingResult:
    atoms = single_structure(structures, "minimahopping").copy()
    apply_fixed_atoms(atoms, spec.fixed_atoms)

    # A fresh folder per attempt: ASE resumes from an existing hop.log, which a retry must not do.
    folder = Path(tempfile.mkdtemp(prefix="minimahopping-", dir=ctx.workdir))
    write(folder / "input.traj", atoms)
    (folder / "spec.json").write_text(spec.model_dump_json())
    (folder / "device.json").write_text(json.dumps({"device": ctx.device}))

    env = dict(os.environ)
    env.update(ctx.env)
    env.setdefault("OMP_NUM_THREADS", str(ctx.threads))
    proc = subprocess.run(
        [sys.executable, "-m", "reactforge.tasks.minimahopping", str(folder)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"minimahopping search failed in {folder}:\n{proc.stderr[-3000:]}")

    extra = json.loads((folder / "sigma.json").read_text())
    minima, energies = [], []
    with Trajectory(folder / "minima.traj") as traj:
        for minimum in traj:
            energies.append(float(minimum.get_potential_energy()))
            minima.append(plain_atoms(minimum))
    return MinimaHoppingResult(
        minima=minima,
        energies_eV=energies,
        sigma_per_minimum_eV=extra["sigma_per_minimum_eV"],
        hops=extra["hops"],
    )


if __name__ == "__main__":
    _hop(Path(sys.argv[1]).resolve())
