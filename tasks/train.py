"""Train task: fit a GAP (quippy `gap_fit`), a MACE committee (`mace_run_train`) or an MFN committee to
labelled structures; each model kind's fit is in tasks/training/<kind>.py, what they share is here.

Input structures carry their labels as info["REF_energy"] (eV), arrays["REF_forces"] (eV/Å), optionally
info["REF_stress"] (Voigt 6, eV/Å³), and per-configuration weights info["energy_weight"] /
info["force_weight"] (default 1; the workflows give dimers 1/5). Single-atom configurations with
info["config_type"] = "IsolatedAtom" (MACE's name; "isolated_atom" also read) are not fitted: they give the
per-element reference energies E0.
Elements without one get E0 from a least-squares fit of the total energies on composition.

gap_fit and mace_run_train run as the real executables from the interpreter's bin directory; their output
goes to a log in the task's workdir and a non-zero exit raises `TrainingFailed` with the log's tail.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.io import write

from reactforge.schemas.results import TrainResult
from reactforge.schemas.tasks import ISOLATED_ATOM, ISOLATED_ATOM_TYPES, ModelRef, TrainSpec

from .context import TaskContext
from .errors import TaskError, TransientError
from .structures import plain_atoms

ISOLATED, ISOLATED_TYPES = ISOLATED_ATOM, ISOLATED_ATOM_TYPES


def is_isolated(atoms: Atoms) -> bool:
    return atoms.info.get("config_type") in ISOLATED_TYPES

# Imported when used: each fitter module imports the shared pieces below from this one.
FITTERS = {
    "gap": "reactforge.tasks.training.gap",
    "mace": "reactforge.tasks.training.mace",
    "mfn": "reactforge.tasks.training.mfn",
}


class TrainingFailed(TaskError):
    """gap_fit / mace_run_train exited with an error (the message carries the log's tail)."""

    failure_class = "error"


# ----------------------------------------------------------------------------------------------
# Training set
# ----------------------------------------------------------------------------------------------


def _weight(atoms: Atoms, key: str, i: int) -> float:
    w = float(atoms.info.get(key, 1.0))
    if not np.isfinite(w) or w <= 0:
        raise ValueError(f"structure {i}: info[{key!r}] = {w} must be a positive number")
    return w


def split_training_set(structures: list[Atoms]) -> tuple[list[Atoms], dict[int, float]]:
    """Validate labels; return (configurations to fit, {Z: isolated-atom energy in eV})."""
    configs, isolated = [], {}
    for i, atoms in enumerate(structures):
        if "REF_energy" not in atoms.info:
            raise ValueError(f"structure {i} ({atoms.get_chemical_formula()}): no info['REF_energy'] label")
        energy = float(atoms.info["REF_energy"])
        if not np.isfinite(energy):
            raise ValueError(f"structure {i}: REF_energy is not finite")
        if is_isolated(atoms):
            if len(atoms) != 1:
                raise ValueError(f"structure {i}: config_type={ISOLATED} needs exactly one atom, has {len(atoms)}")
            isolated[int(atoms.numbers[0])] = energy
            continue
        forces = atoms.arrays.get("REF_forces")
        if forces is None or np.shape(forces) != (len(atoms), 3):
            raise ValueError(f"structure {i}: arrays['REF_forces'] missing or not of shape ({len(atoms)}, 3)")
        if not np.all(np.isfinite(forces)):
            raise ValueError(f"structure {i}: REF_forces not finite")
        if "REF_stress" in atoms.info and np.shape(atoms.info["REF_stress"]) not in ((6,), (3, 3)):
            raise ValueError(f"structure {i}: REF_stress must be Voigt 6 or 3x3")
        _weight(atoms, "energy_weight", i)
        _weight(atoms, "force_weight", i)
        configs.append(atoms)
    if not configs:
        raise ValueError("the training set has no labelled configurations besides isolated atoms")
    return configs, isolated


def reference_energies(configs: list[Atoms], isolated: dict[int, float], use_isolated: bool = True) -> dict[int, float]:
    """E0 per element: isolated-atom energies where given, else least squares of E_total on composition
    (what `--E0s=average` does in MACE; computed here so every committee member uses the same E0s)."""
    species = sorted({int(z) for a in configs for z in a.numbers} | set(isolated))
    known = {z: e for z, e in isolated.items() if use_isolated}
    missing = [z for z in species if z not in known]
    e0 = dict(known)
    if missing:
        counts = np.array([[np.sum(a.numbers == z) for z in missing] for a in configs], dtype=float)
        rest = np.array(
            [a.info["REF_energy"] - sum(known.get(int(z), 0.0) for z in a.numbers) for a in configs], dtype=float
        )
        fit, *_ = np.linalg.lstsq(counts, rest, rcond=None)
        e0.update({z: float(v) for z, v in zip(missing, fit)})
    return {z: e0[z] for z in species}


def write_training_file(path: Path, images: list[Atoms]) -> None:
    """The fitter's extxyz, written to a temporary name and renamed."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp, images, format="extxyz")
    os.replace(tmp, path)


def stress_3x3(stress) -> np.ndarray:
    s = np.asarray(stress, dtype=float)
    if s.shape == (3, 3):
        return s
    xx, yy, zz, yz, xz, xy = s
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


# ----------------------------------------------------------------------------------------------
# Running a fitter
# ----------------------------------------------------------------------------------------------


def fitter_executable(name: str) -> str:
    """The console script next to the interpreter (the venv's bin, whatever PATH says), else on PATH."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise TrainingFailed(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def run_logged(jobs: list[tuple[list[str], Path, Path]], env: dict[str, str]) -> None:
    """Run (command, cwd, log) jobs concurrently; all finish before the first failure is raised."""
    procs = []
    for cmd, cwd, log in jobs:
        with open(log, "w") as fh:
            procs.append(subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **env}))
    codes = [p.wait() for p in procs]
    for (cmd, _, log), code in zip(jobs, codes):
        if code != 0:
            lines = log.read_text(errors="replace").splitlines(keepends=True)
            flagged = [ln for ln in lines[:-25] if any(w in ln for w in ("ABORT", "ERROR", "Error"))]
            tail = "".join(flagged[-5:] + lines[-25:])
            message = f"{Path(cmd[0]).name} exited with {code} (log {log}):\n{tail}"
            if code < 0:  # killed by a signal (OOM killer, walltime, lost node): worth a retry
                raise TransientError(message)
            raise TrainingFailed(message)


def files_sha256(paths: list[Path]) -> str:
    """Identity of a model: hash over the names and contents of all its files, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Task entry point
# ----------------------------------------------------------------------------------------------


def training_rmse(ref: ModelRef, configs: list[Atoms], device: str) -> tuple[float, float]:
    """(energy RMSE meV/atom, force-component RMSE meV/Å) of the fitted model on its training set."""
    from .mlff import load_mlff

    calc = load_mlff(ref, device=device)
    de, df = [], []
    for atoms in configs:
        a = plain_atoms(atoms, provenance=False)
        a.calc = calc
        de.append((a.get_potential_energy() - atoms.info["REF_energy"]) / len(a))
        df.append((a.get_forces() - atoms.arrays["REF_forces"]).reshape(-1))
    return 1e3 * float(np.sqrt(np.mean(np.square(de)))), 1e3 * float(np.sqrt(np.mean(np.square(np.concatenate(df)))))


def run(spec: TrainSpec, structures: list[Atoms], ctx: TaskContext) -> TrainResult:
    start = time.perf_counter()
    workdir = Path(ctx.workdir).resolve()
    configs, isolated = split_training_set(structures)
    device = ctx.device if spec.device == "auto" else spec.device
    model = spec.model
    fitter = importlib.import_module(FITTERS[model.model])
    paths, files, e0, commands = fitter.fit(model, configs, isolated, workdir, spec.seed, device, ctx.threads)
    uncertainty = "energy" if model.model == "gap" else model.uncertainty  # GAP: its local-energy variance
    ref = ModelRef(
        model=model.model, paths=[str(p) for p in paths], sha256=files_sha256(files), uncertainty=uncertainty
    )
    rmse_e, rmse_f = training_rmse(ref, configs, device)
    return TrainResult(
        model=ref,
        n_configs=len(configs),
        train_rmse_energy_meV_per_atom=rmse_e,
        train_rmse_forces_meV_per_A=rmse_f,
        wall_s=time.perf_counter() - start,
        e0_eV={chemical_symbols[z]: e for z, e in e0.items()},
        commands=commands,
    )
