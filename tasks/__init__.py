"""Tasks: plain functions `run(spec, structures, ctx) -> result`, one file per kind, no Parsl.

`run_task` is the one entry point the engine calls (in a thread, an HTEX worker or a compute node).
"""
from __future__ import annotations

import importlib

from ase import Atoms

from .context import TaskContext

MODULES = {
    "singlepoint": "reactforge.tasks.singlepoint",
    "md": "reactforge.tasks.md",
    "optimise": "reactforge.tasks.optimise",
    "neb": "reactforge.tasks.neb",
    "minimahopping": "reactforge.tasks.minimahopping",
    "umbrellawindow": "reactforge.tasks.umbrella",
    "nmrshielding": "reactforge.tasks.nmrshielding",
    "train": "reactforge.tasks.train",
}


def run_task(spec, structures: list[Atoms], ctx: TaskContext):
    """Run one task spec on its input structures; returns the kind's result model."""
    module = importlib.import_module(MODULES[spec.kind])
    return module.run(spec, [a.copy() for a in structures], ctx)
