"""Site configuration: which Parsl executors exist and which of them runs what a task computes.

A site file is plain YAML a user writes for their cluster. `${VAR}` in any string is replaced by the
environment variable VAR when the file is loaded (budget codes never live in the repository).
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from .base import Strict
from .kinds import RESOURCES


class LocalProviderConfig(Strict):
    type: Literal["local"] = "local"
    init_blocks: int = Field(1, ge=0)
    min_blocks: int = Field(0, ge=0)
    max_blocks: int = Field(1, ge=1)
    worker_init: str = ""


class SlurmProviderConfig(Strict):
    """Parsl SlurmProvider settings; Parsl renders the sbatch script."""

    type: Literal["slurm"] = "slurm"
    partition: str
    account: str = Field(..., description="budget code; use ${ENV_VAR} rather than writing it here")
    qos: str | None = None
    nodes_per_block: int = Field(1, ge=1)
    cores_per_node: int | None = Field(None, ge=1)
    mem_per_node_GB: int | None = Field(None, ge=1)
    gpus_per_node: int | None = Field(None, ge=1)
    constraint: str | None = None
    walltime: str = Field("01:00:00", pattern=r"^\d+:\d\d:\d\d$")
    init_blocks: int = Field(0, ge=0)
    min_blocks: int = Field(0, ge=0)
    max_blocks: int = Field(1, ge=1)
    exclusive: bool = True
    worker_init: str = ""
    scheduler_options: str = Field("", description="extra '#SBATCH ...' lines")
    launcher: Literal["srun", "single"] = "single"


Provider = Annotated[Union[LocalProviderConfig, SlurmProviderConfig], Field(discriminator="type")]


class ExecutorConfig(Strict):
    type: Literal["threads", "htex"] = "htex"
    max_workers: int = Field(1, ge=1, description="threads, or HTEX workers per node")
    cores_per_worker: float = Field(1.0, gt=0)
    address: str | None = Field(None, description="interchange address (HTEX); the login node on clusters")
    provider: Provider = LocalProviderConfig()
    device: Literal["cpu", "cuda"] = "cpu"
    threads_per_task: int = Field(1, ge=1, description="OMP/torch threads inside one task")

    @model_validator(mode="after")
    def _threads_are_local(self):
        if self.type == "threads" and self.provider.type != "local":
            raise ValueError("a 'threads' executor runs in the coordinator process: provider must be local")
        return self


class SiteConfig(Strict):
    name: str
    executors: dict[str, ExecutorConfig] = Field(..., min_length=1)
    resources: dict[Literal["reference", "mlff", "training", "training_cpu"], str] = Field(
        ...,
        description="executor label for what a task computes: reference (reference-code calls: single points, "
        "reference optimisations and NEBs, shieldings), mlff (force-field simulations), training (MACE/MFN "
        "fits), training_cpu (gap_fit; default: the mlff executor)",
    )
    reference_launch: str = Field("", description="MPI launch prefix for reference codes (pw.x, castep)")
    reference_env: dict[str, str] = Field(default_factory=dict, description="e.g. OMP_NUM_THREADS: '1'")
    reference_timeout_s: float | None = Field(
        None, gt=0, description="wall-clock limit of one reference-code run (pw.x, CASTEP), killed with its "
        "processes -> transient failure, retried; a reference's own timeout_s overrides it"
    )
    walltime_s: dict[Literal["reference", "mlff", "training", "training_cpu"], Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="wall-clock limit of one task attempt by resource -> transient "
        "failure, retried elsewhere (covers codes that run inside the worker, such as tblite)"
    )

    @model_validator(mode="before")
    @classmethod
    def _task_executors_were_replaced(cls, data):
        if isinstance(data, dict) and "task_executors" in data:
            raise ValueError("task_executors (task kind -> executor) was replaced by resources "
                             f"({', '.join(RESOURCES)} -> executor): work is routed by what it computes")
        return data

    @model_validator(mode="after")
    def _every_resource_has_an_executor(self):
        missing = [r for r in ("reference", "mlff", "training") if r not in self.resources]
        if missing:
            raise ValueError(f"resources: no executor for {missing}")
        bad = {k: v for k, v in self.resources.items() if v not in self.executors}
        if bad:
            raise ValueError(f"resources: labels not defined under executors: {bad}")
        return self

    def executor_for(self, resource: str) -> str:
        if resource == "training_cpu" and resource not in self.resources:
            return self.resources["mlff"]
        return self.resources[resource]
