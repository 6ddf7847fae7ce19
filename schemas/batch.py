"""The simplest protocol: a list of tasks to run (reference single points, MLFF simulations, fits)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Strict
from .kinds import TaskSpec
from .loading import ProtocolFile


class Job(Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    spec: TaskSpec
    structures: list[str] = Field(..., min_length=1, description="structure files (ASE-readable), "
                                  "relative to the protocol file; 'file@i' picks frame i")


class BatchProtocol(ProtocolFile):
    workflow: Literal["tasks"] = "tasks"
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    jobs: list[Job] = Field(..., min_length=1)
