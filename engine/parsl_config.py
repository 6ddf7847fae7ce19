"""SiteConfig -> parsl.Config. Parsl's providers write the SLURM scripts; we only pass settings."""
from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

from reactforge.schemas.kinds import RESOURCES
from reactforge.schemas.site import ExecutorConfig, SiteConfig


@cache  # parsl is imported when a provider is built, not when this module is
def _slurm_provider_class():
    from parsl.providers import SlurmProvider

    class GpuAwareSlurmProvider(SlurmProvider):
        """Parsl's SlurmProvider, with two things its options cannot say.

        `gpus`: `#SBATCH --gpus=N` (GPUs per job), the form ARCHER2 documents; Parsl only writes
        --gpus-per-node. `asks_for_gpus`: no `--ntasks-per-node` line. Parsl's template always writes one,
        and ARCHER2 rejects GPU jobs that set tasks or cores (it sizes their host share by the GPUs); without
        it SLURM starts one task per node, which is what the line said for an HTEX block.
        """

        NTASKS_LINE = "#SBATCH --ntasks-per-node=${tasks_per_node}\n"
        on_submit = None  # callable(job_id, job_name): the engine records every block it submits

        def __init__(self, *, gpus: int | None = None, asks_for_gpus: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.gpus, self.asks_for_gpus = gpus, asks_for_gpus
            if gpus:
                self.scheduler_options += f"#SBATCH --gpus={gpus}\n"

        def submit(self, command, tasks_per_node, job_name="parsl.slurm"):
            job_id = super().submit(command, tasks_per_node, job_name)
            if self.on_submit is not None:  # Parsl adds a timestamp to the name: the one the script was given
                self.on_submit(job_id, self._submitted_name)
            return job_id

        def _write_submit_script(self, template, script_filename, job_name, configs):
            self._submitted_name = job_name
            if self.asks_for_gpus:
                if self.NTASKS_LINE not in template:  # a new Parsl template: fail rather than submit a rejected job
                    raise RuntimeError("Parsl's SLURM template changed: cannot leave out --ntasks-per-node")
                template = template.replace(self.NTASKS_LINE, "")
            return super()._write_submit_script(template, script_filename, job_name, configs)

    return GpuAwareSlurmProvider


def _provider(cfg: ExecutorConfig):
    from parsl.launchers import SingleNodeLauncher, SrunLauncher
    from parsl.providers import LocalProvider

    p = cfg.provider
    if p.type == "local":
        return LocalProvider(
            init_blocks=p.init_blocks, min_blocks=p.min_blocks, max_blocks=p.max_blocks, worker_init=p.worker_init
        )
    return _slurm_provider_class()(
        gpus=p.gpus_per_job,
        asks_for_gpus=p.asks_for_gpus,
        partition=p.partition,
        account=p.account,
        qos=p.qos,
        constraint=p.constraint,
        nodes_per_block=p.nodes_per_block,
        cores_per_node=p.cores_per_node,
        mem_per_node=p.mem_per_node_GB,
        gpus_per_node=p.gpus_per_node,
        walltime=p.walltime,
        init_blocks=p.init_blocks,
        min_blocks=p.min_blocks,
        max_blocks=p.max_blocks,
        exclusive=p.exclusive,
        worker_init=p.worker_init,
        scheduler_options=p.scheduler_options,
        launcher=SrunLauncher() if p.launcher == "srun" else SingleNodeLauncher(),
    )


def build_executor(label: str, cfg: ExecutorConfig, run_dir: Path, on_submit=None):
    from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor

    if cfg.type == "threads":
        return ThreadPoolExecutor(label=label, max_threads=cfg.max_workers)
    from parsl.executors.high_throughput.executor import DEFAULT_INTERCHANGE_LAUNCH_CMD, DEFAULT_LAUNCH_CMD

    # interchange and local worker pools die with the coordinator (engine/guard.py); pools on cluster
    # nodes go when the interchange does (their heartbeats stop answering)
    guard = [sys.executable, "-m", "reactforge.engine.guard"]
    launch_cmd = DEFAULT_LAUNCH_CMD
    provider = _provider(cfg)
    if cfg.provider.type == "local":
        launch_cmd = " ".join(guard + ["--watch", str(os.getpid()), "--", DEFAULT_LAUNCH_CMD])
    else:  # a SIGKILLed coordinator's blocks can hold their nodes until walltime (a pool that had not reached
        # the interchange yet waits for it forever): the next coordinator scancels them from this record
        provider.on_submit = None if on_submit is None else (lambda job_id, name: on_submit(label, job_id, name))
    return HighThroughputExecutor(
        label=label,
        interchange_launch_cmd=guard + ["--", *DEFAULT_INTERCHANGE_LAUNCH_CMD],
        launch_cmd=launch_cmd,
        address=cfg.address,
        max_workers_per_node=cfg.max_workers,
        cores_per_worker=cfg.cores_per_worker,
        provider=provider,
        worker_logdir_root=str(run_dir / "parsl" / "workers"),
        heartbeat_period=15,
        heartbeat_threshold=120,
    )


def build_config(site: SiteConfig, run_dir: Path, on_submit=None):
    """`on_submit(label, job_id, job_name)` is called for every SLURM job a provider submits."""
    from parsl.config import Config

    return Config(
        executors=[build_executor(label, cfg, run_dir, on_submit) for label, cfg in site.executors.items()],
        run_dir=str(run_dir / "parsl"),
        retries=0,  # retries are decided by the engine from the failure class
        strategy="simple",
        initialize_logging=True,
        usage_tracking=0,
    )


def describe(site: SiteConfig) -> list[str]:
    """One line per executor: what `--check` says it would start."""
    lines = []
    for label, cfg in site.executors.items():
        kinds = [r for r in RESOURCES if r in site.resources and site.executor_for(r) == label]
        if "training_cpu" not in site.resources and site.executor_for("training_cpu") == label:
            kinds.append("training_cpu")
        p = cfg.provider
        where = "in-process threads" if cfg.type == "threads" else (
            f"HTEX on local provider ({cfg.max_workers} workers)" if p.type == "local" else
            f"HTEX on SLURM partition={p.partition} qos={p.qos} nodes/block={p.nodes_per_block} "
            f"walltime={p.walltime} max_blocks={p.max_blocks} ({cfg.max_workers} workers/node)"
        )
        lines.append(f"{label}: {where}, device={cfg.device}; runs {', '.join(kinds) or 'nothing'}")
    return lines


def render_submit_script(site: SiteConfig, label: str, script_dir: Path) -> str:
    """The sbatch script Parsl would submit for one block of a SLURM executor, without submitting.

    The provider's own renderer writes it; only `sbatch` is intercepted (it answers with a fake id).
    """
    cfg = site.executors[label]
    if cfg.provider.type != "slurm":
        raise ValueError(f"executor {label!r} does not use SLURM")
    provider = _provider(cfg)
    provider.script_dir = str(script_dir)
    Path(script_dir).mkdir(parents=True, exist_ok=True)
    provider.execute_wait = lambda cmd, timeout=None: (0, "Submitted batch job 1", "")
    command = f"process_worker_pool.py -a {cfg.address} ...  # HTEX's worker pool; ports are chosen at start"
    provider.submit(command, tasks_per_node=1, job_name=f"reactforge.{label}")
    scripts = sorted(p for p in Path(script_dir).glob(f"reactforge.{label}.*") if p.suffix not in (".stdout", ".stderr"))
    return scripts[-1].read_text()
