"""Site configuration: which Parsl executors exist and which of them runs what a task computes.

A site file is plain YAML a user writes for their cluster. `${VAR}` in any string is replaced by the
environment variable VAR when the file is loaded (budget codes never live in the repository).
Values that end up in a job script are one line each (`scheduler_options` excepted: `#SBATCH` lines only),
so that nothing in a site file, or in a variable it names, becomes a shell command of its own.
"""
from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field, field_validator, model_validator

from .base import Strict
from .kinds import RESOURCES


def _control_characters(value: str, allowed: str = "") -> str:
    bad = sorted({f"U+{ord(c):04X}" for c in value if (ord(c) < 0x20 or ord(c) == 0x7F) and c not in allowed})
    return ", ".join(bad)


def _one_line(value: str) -> str:
    if bad := _control_characters(value):
        raise ValueError(f"control character(s) {bad} not allowed: the value is written into a job script, where "
                         "a newline would start a shell command of its own (separate commands with ';')")
    return value


# a value written into a submit script or a launch command
Line = Annotated[str, AfterValidator(_one_line)]

# sbatch options that ask for tasks or cores per task: SLURM sites that give a GPU job its host cores with
# its GPUs (ARCHER2) reject GPU jobs that also set them
_TASK_OPTIONS = re.compile(r"^#SBATCH\s+(--n?tasks|--cpus-per-task|-[nc](?![a-z]))")


class LocalProviderConfig(Strict):
    type: Literal["local"] = "local"
    init_blocks: int = Field(1, ge=0)
    min_blocks: int = Field(0, ge=0)
    max_blocks: int = Field(1, ge=1)
    worker_init: Line = ""


class SlurmProviderConfig(Strict):
    """Parsl SlurmProvider settings; Parsl renders the sbatch script."""

    type: Literal["slurm"] = "slurm"
    partition: Line
    account: Line = Field(..., description="budget code; use ${ENV_VAR} rather than writing it here")
    qos: Line | None = None
    nodes_per_block: int = Field(1, ge=1)
    cores_per_node: int | None = Field(None, ge=1, description="writes --cpus-per-task (not for GPU jobs)")
    mem_per_node_GB: int | None = Field(None, ge=1)
    gpus_per_node: int | None = Field(None, ge=1, description="#SBATCH --gpus-per-node=N")
    gpus_per_job: int | None = Field(None, ge=1, description="#SBATCH --gpus=N, GPUs for the whole job (ARCHER2's "
                                     "form). A job that asks for GPUs gets no --ntasks-per-node line")
    constraint: Line | None = None
    walltime: str = Field("01:00:00", pattern=r"^\d+:\d\d:\d\d$")
    init_blocks: int = Field(0, ge=0)
    min_blocks: int = Field(0, ge=0)
    max_blocks: int = Field(1, ge=1)
    exclusive: bool = True
    worker_init: Line = ""
    scheduler_options: str = Field("", description="extra '#SBATCH ...' lines")
    launcher: Literal["srun", "single"] = "single"

    @property
    def asks_for_gpus(self) -> bool:
        return bool(self.gpus_per_job or self.gpus_per_node)

    @field_validator("scheduler_options")
    @classmethod
    def _sbatch_lines_only(cls, value: str) -> str:
        # the one multi-line value: anything but a directive here would run as a command of the job
        if bad := _control_characters(value, allowed="\n"):
            raise ValueError(f"control character(s) {bad} not allowed: give '#SBATCH ...' lines only")
        for line in value.split("\n"):
            if line.strip() and not line.startswith("#SBATCH"):
                raise ValueError(f"every line must start with '#SBATCH' (a directive); got {line!r}: commands "
                                 "belong in worker_init")
        return value

    @model_validator(mode="after")
    def _gpu_jobs_leave_tasks_to_slurm(self):
        if self.gpus_per_job and self.gpus_per_node:
            raise ValueError("set gpus_per_job (--gpus) or gpus_per_node (--gpus-per-node), not both")
        if self.asks_for_gpus:
            # ARCHER2 rejects GPU jobs with --ntasks/--cpus-per-task: it sizes their host share by the GPUs
            if self.cores_per_node is not None:
                raise ValueError("cores_per_node writes --cpus-per-task, which SLURM sites such as ARCHER2 reject "
                                 "in a job that asks for GPUs (host cores come with the GPUs): leave it unset")
            lines = [ln for ln in self.scheduler_options.split("\n") if _TASK_OPTIONS.match(ln)]
            if lines:
                raise ValueError(f"scheduler_options: {lines[0]!r} in a job that asks for GPUs; SLURM sites such as "
                                 "ARCHER2 reject --ntasks/--cpus-per-task there (host cores come with the GPUs)")
        return self


Provider = Annotated[Union[LocalProviderConfig, SlurmProviderConfig], Field(discriminator="type")]


class ExecutorConfig(Strict):
    type: Literal["threads", "htex"] = "htex"
    max_workers: int = Field(1, ge=1, description="threads, or HTEX workers per node")
    cores_per_worker: float = Field(1.0, gt=0)
    address: Line | None = Field(None, description="interchange address (HTEX); the login node on clusters")
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
    executors: dict[Line, ExecutorConfig] = Field(..., min_length=1)
    resources: dict[Literal["reference", "mlff", "training", "training_cpu"], str] = Field(
        ...,
        description="executor label for what a task computes: reference (reference-code calls: single points, "
        "reference optimisations and NEBs, shieldings), mlff (force-field simulations), training (MACE/MFN "
        "fits), training_cpu (gap_fit; default: the mlff executor)",
    )
    reference_launch: Line = Field("", description="MPI launch prefix for reference codes (pw.x, castep)")
    reference_env: dict[Line, Line] = Field(default_factory=dict, description="e.g. OMP_NUM_THREADS: '1'")
    reference_timeout_s: float | None = Field(
        None, gt=0, description="wall-clock limit of one reference-code run (pw.x, CASTEP), killed with its "
        "processes -> transient failure, retried; a reference's own timeout_s overrides it"
    )
    walltime_s: dict[Literal["reference", "mlff", "training", "training_cpu"], Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="wall-clock limit of one task attempt by resource -> transient "
        "failure, retried elsewhere (covers codes that run inside the worker, such as tblite)"
    )
    parsl_log_level: Literal["DEBUG", "INFO", "WARNING"] = Field(
        "INFO", description="level of the coordinator's parsl.log (runinfo under the run directory); DEBUG logs "
        "every task's passage and costs about 1 ms per task"
    )
    checkpoint_interval_s: float = Field(
        120.0, ge=0, description="long MLFF tasks (MD, umbrella windows, minima hopping) save their state at "
        "most this often; a killed or expired attempt resumes from the last save instead of step 0"
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

    @model_validator(mode="after")
    def _no_job_step_inside_a_job_step(self):
        # an srun launcher runs the worker pool as a job step holding the block's nodes; an srun in
        # reference_launch is then a second step that waits for them forever ("Requested nodes are busy")
        label = self.executor_for("reference")
        provider = self.executors[label].provider
        if provider.type == "slurm" and provider.launcher == "srun" and "srun" in (
                w.rsplit("/", 1)[-1] for w in self.reference_launch.split()):
            raise ValueError(f"executors.{label}.provider.launcher: 'srun' with reference_launch "
                             f"'{self.reference_launch}' nests one srun job step inside another, which waits "
                             "forever for nodes the first one holds; use launcher: single (the worker pool runs "
                             "in the batch script) with srun in reference_launch, as site-configs/archer2.yaml does")
        return self

    def executor_for(self, resource: str) -> str:
        if resource == "training_cpu" and resource not in self.resources:
            return self.resources["mlff"]
        return self.resources[resource]
