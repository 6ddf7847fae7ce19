"""The simplest protocol: a list of tasks to run (reference single points, MLFF simulations, fits)."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr

from .base import Strict
from .kinds import TaskSpec


class Job(Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    spec: TaskSpec
    structures: list[str] = Field(..., min_length=1, description="structure files (ASE-readable), "
                                  "relative to the protocol file; 'file@i' picks frame i")


class BatchProtocol(Strict):
    workflow: Literal["tasks"] = "tasks"
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    jobs: list[Job] = Field(..., min_length=1)

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)  # the protocol file's folder (set by run.py)
