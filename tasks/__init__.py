"""Tasks: plain functions `run(spec, structures, ctx) -> result`, one file per kind, no Parsl.

`run_task` is the one entry point the engine calls (in a thread, an HTEX worker or a compute node).
"""
from __future__ import annotations

import importlib

from ase import Atoms

from reactforge.schemas.kinds import KINDS

from .context import TaskContext


def run_task(spec, structures: list[Atoms], ctx: TaskContext):
    """Run one task spec on its input structures; returns the kind's result model."""
    module = importlib.import_module(f"{__name__}.{KINDS[spec.kind].module}")
    return module.run(spec, [a.copy() for a in structures], ctx)
