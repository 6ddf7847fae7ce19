"""What the engine hands a task besides its spec and structures: where to work and how to launch."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TaskContext:
    workdir: Path  # private scratch directory of this task (on shared storage for cluster sites)
    launch: str = ""  # MPI launch prefix for reference codes, e.g. "srun --hint=nomultithread"
    device: str = "cpu"  # "cpu" or "cuda" for training / MLFF evaluation
    threads: int = 1
    env: dict[str, str] = field(default_factory=dict)  # extra environment for reference codes
    reference_timeout_s: float | None = None  # the site's wall-clock limit of one reference-code run
    # long MLFF tasks save their state here every checkpoint_interval_s (tasks/checkpoint.py); the
    # folder is the task's own, shared by its attempts, so a retry or a resumed run continues from it
    checkpoint_dir: Path | None = None
    checkpoint_interval_s: float = 120.0

    def __post_init__(self):
        Path(self.workdir).mkdir(parents=True, exist_ok=True)
