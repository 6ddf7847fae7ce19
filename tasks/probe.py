"""A task that computes nothing and says where it ran: the engine's own cost per task
(benchmarks/engine.py) and a check that a site's executor starts and runs work."""
from __future__ import annotations

import os
import platform
import socket

from ase import Atoms

from reactforge.schemas.results import ProbeResult
from reactforge.schemas.tasks import ProbeSpec

from .context import TaskContext


def run(spec: ProbeSpec, structures: list[Atoms], ctx: TaskContext) -> ProbeResult:
    return ProbeResult(host=socket.gethostname(), pid=os.getpid(), python=platform.python_version())
