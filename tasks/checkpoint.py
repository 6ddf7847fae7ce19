"""Segment checkpoints for long MLFF tasks (MD, umbrella windows), so that a walltime kill, a lost node
or a killed coordinator costs the current segment, not the whole trajectory.

The checkpoint lives in the task's own folder, shared by all its attempts and by a resumed
coordinator (the task key fixes spec and structures, so a checkpoint found there belongs to exactly
this calculation). It holds positions, momenta, the step reached, the random generator's state and
whatever the task accumulates (σ trace, CV samples); restoring all of them continues the same
trajectory: a resumed run returns what an uninterrupted one would.

One file, written to a temporary name and renamed over the old one: a kill during the write leaves
the previous checkpoint intact. A checkpoint that cannot be read is ignored (the task restarts from
step 0) rather than failing the task.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from ase import Atoms

from .context import TaskContext


class Checkpoint:
    def __init__(self, ctx: TaskContext, name: str):
        self.path = Path(ctx.checkpoint_dir) / f"{name}.npz" if ctx.checkpoint_dir else None
        self.interval_s = ctx.checkpoint_interval_s
        self._last = time.monotonic()

    def load(self, atoms: Atoms) -> dict | None:
        """Restore positions and momenta into `atoms` and return the saved state, or None."""
        if self.path is None or not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as data:
                positions, momenta = data["positions"], data["momenta"]
                state = json.loads(str(data["state"]))
        except Exception:  # noqa: BLE001 - any unreadable file (zip, npy or JSON damage) is no checkpoint
            return None
        if positions.shape != atoms.positions.shape:
            return None
        atoms.positions = positions
        atoms.set_momenta(momenta, apply_constraint=False)
        return state

    def due(self) -> bool:
        return self.path is not None and time.monotonic() - self._last >= self.interval_s

    def save(self, atoms: Atoms, state: dict) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, positions=atoms.positions, momenta=atoms.get_momenta(), state=np.array(json.dumps(state)))
        os.replace(tmp, self.path)
        self._last = time.monotonic()


def rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def restore_rng(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state
