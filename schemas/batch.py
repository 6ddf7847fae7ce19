"""The simplest protocol: a list of tasks to run (reference single points, MLFF simulations, fits)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import Identifier, Strict
from .kinds import TaskSpec
from .loading import ProtocolFile


class Job(Strict):
    name: Identifier = Field(..., description="also its result's file name, results/<name>.json")
    spec: TaskSpec
    structures: list[str] = Field(..., min_length=1, description="structure files (ASE-readable), "
                                  "relative to the protocol file; 'file@i' picks frame i")


class BatchProtocol(ProtocolFile):
    workflow: Literal["tasks"] = "tasks"
    name: Identifier = Field(..., description="also the default run directory, runs/<name>")
    jobs: list[Job] = Field(..., min_length=1)

    @field_validator("jobs")
    @classmethod
    def _unique_names(cls, jobs: list[Job]) -> list[Job]:
        # both would run, but results/<name>.json and the summary keep one of them
        names = [job.name for job in jobs]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"job name(s) {twice} given more than once; names must be unique")
        return jobs
