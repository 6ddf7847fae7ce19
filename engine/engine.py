"""The engine: task specs in, Parsl apps out, results journaled by content hash.

    future = engine.submit(spec, structures)      # -> concurrent.futures.Future[result model]

Each spec goes to the site's executor for what it computes (its resource, schemas/kinds.py). The key of a task is a hash of
its canonical spec JSON, its input structures and the versions of the codes that compute it (the
model identity is inside the spec as ModelRef.sha256). A key found done in the journal is answered
from there without touching Parsl. Failures are classified (tasks/errors.py):
transient -> retried up to spec.max_retries; scf -> retried once with the reference's fallback
settings; unphysical or anything else -> recorded, the future raises TaskFailed, the campaign goes on.
On resume, scf and unphysical failures are answered from the journal too (so a replay is exact).
"""
from __future__ import annotations

import functools
import getpass
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ase import Atoms
from pydantic import TypeAdapter

from reactforge.schemas.base import atoms_to_text
from reactforge.schemas.kinds import KINDS, TaskResult, TaskSpec
from reactforge.schemas.site import SiteConfig

from .journal import Journal, dumps
from .lock import RunLock
from .store import atomic_write_text

_RESULT = TypeAdapter(TaskResult)
_SPEC = TypeAdapter(TaskSpec)

# Parsl reports lost workers/managers with these exception classes: retry them like node loss.
_PARSL_TRANSIENT = {"WorkerLost", "ManagerLost", "BadStateException", "ScalingFailed", "ExecutorError",
                    "MissingOutputs", "BadRegistration", "ConnectionRefusedError", "TimeoutError"}

# The SLURM jobs (Parsl blocks) coordinators on a run directory submitted: {executor, job_id, job_name, by}.
SLURM_JOBS = "slurm_jobs.json"

# Failure classes a resumed run takes from the journal instead of running again (their retries, the SCF
# fallback included, were already spent); transient failures and unclassified errors are run again.
_FINAL = ("scf", "unphysical")

def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


@functools.cache  # installed versions do not change under a running coordinator; reading them costs ~1 ms each
def _code_versions_json(kind: str) -> str:
    return dumps(code_versions(kind))


def code_versions(kind: str) -> dict[str, str]:
    names = ("reactforge", "numpy") + KINDS[kind].codes
    return {n: _version(n) for n in names}


def structure_texts(structures: list[Atoms]) -> list[str]:
    """extxyz of each structure without its calculator: what is hashed and what workers receive."""
    return [atoms_to_text(a.copy()) for a in structures]  # ASE's copy carries no calculator


def task_key(spec, structures: list[Atoms], texts: list[str] | None = None) -> str:
    """Content hash: canonical spec (retry budget excluded) + structures + code versions.

    A model enters by its sha256, not by where its files lie (a moved run directory still resumes)."""
    spec_json = spec.model_dump(mode="json", exclude={"max_retries"})
    if isinstance(spec_json.get("model"), dict) and "sha256" in spec_json["model"]:
        spec_json["model"].pop("paths", None)
    h = hashlib.sha256()
    h.update(dumps(spec_json).encode())
    for text in texts if texts is not None else structure_texts(structures):
        h.update(text.encode())
    h.update(_code_versions_json(spec.kind).encode())
    return h.hexdigest()


def _recorded_jobs(path: Path) -> list[dict]:
    try:
        jobs = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:  # a damaged record must not stop a resume; its jobs end at walltime
        print(f"warning: {path} unreadable ({err}); the jobs it named are not cancelled", file=sys.stderr)
        return []
    if not isinstance(jobs, list):
        return []
    return [j for j in jobs if isinstance(j, dict) and {"job_id", "job_name"} <= j.keys()]


def cancel_recorded_slurm_jobs(run_dir: Path) -> list[dict]:
    """scancel the jobs of run_dir/slurm_jobs.json that are still queued or running under the name they were
    submitted with (a job id alone could be another job's after the scheduler's state was reset). A SIGKILLed
    coordinator's blocks otherwise hold their nodes until their walltime or the workers' heartbeat timeout.
    Returns the records that could not be checked (SLURM unreachable), kept for the next coordinator."""
    recorded = _recorded_jobs(Path(run_dir) / SLURM_JOBS)
    if not recorded:
        return []
    try:
        out = subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "-o", "%i %j"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
        queued = {tuple(line.split(None, 1)) for line in out.splitlines() if line.strip()}
        ours = [j["job_id"] for j in recorded if (str(j["job_id"]), j["job_name"]) in queued]
        if ours:
            subprocess.run(["scancel", *ours], capture_output=True, text=True, timeout=60, check=True)
            print(f"cancelled SLURM job(s) {', '.join(ours)} of the previous coordinator", file=sys.stderr)
    except (OSError, subprocess.SubprocessError) as err:
        print(f"warning: could not cancel the previous coordinator's SLURM jobs ({err}); they end at their "
              "walltime", file=sys.stderr)
        return recorded
    return []


class EngineStopped(Exception):
    """The engine could not record a task (a full disk, a lost journal): the run stops here, and the
    journal holds everything recorded before, so the same command resumes it."""


class TaskFailed(Exception):
    def __init__(self, key: str, kind: str, failure_class: str, message: str):
        self.key, self.kind, self.failure_class, self.message = key, kind, failure_class, message
        super().__init__(f"{kind} task {key[:12]} failed ({failure_class}): {message}")


def limit_threads(n: int) -> None:
    """A worker runs beside `max_workers - 1` others: its OpenMP/torch use `threads_per_task` threads, not
    every core (two ML workers with two torch threads each on 2 cores made a MACE evaluation 20x slower)."""
    os.environ["OMP_NUM_THREADS"] = str(n)  # read when torch or an OpenMP library is first loaded here
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def execute(spec_json: str, structures_text: list[str], ctx: dict) -> str:
    """What runs on the worker: JSON in, JSON out (safe to ship to any executor)."""
    from reactforge.schemas.base import atoms_from_text
    from reactforge.tasks import run_task
    from reactforge.tasks.context import TaskContext

    limit_threads(ctx["threads"])
    spec = _SPEC.validate_json(spec_json)
    structures = [atoms_from_text(t) for t in structures_text]
    workdir = Path(ctx["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "executions.log", "a") as log:  # one line per execution: what ran, where, when
        log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {socket.gethostname()} pid {os.getpid()}\n")
    context = TaskContext(workdir=Path(ctx["workdir"]), launch=ctx["launch"], device=ctx["device"],
                          threads=ctx["threads"], env=ctx["env"], reference_timeout_s=ctx.get("reference_timeout_s"),
                          checkpoint_dir=ctx.get("checkpoint_dir"),
                          checkpoint_interval_s=ctx.get("checkpoint_interval_s", 120.0))
    return run_task(spec, structures, context).model_dump_json()


def classify(exc: BaseException) -> str:
    from reactforge.tasks.errors import TaskError

    if isinstance(exc, TaskError):
        return exc.failure_class
    if type(exc).__name__ in _PARSL_TRANSIENT:
        return "transient"
    return "error"


@dataclass
class _Counts:
    queued: int = 0  # submitted, not settled (the running ones are counted from Parsl's records)
    done: int = 0
    failed: int = 0
    cached: int = 0


@dataclass
class _Pending:
    key: str
    spec: object
    structures_text: list[str]
    label: str
    resource: str
    outer: Future
    attempts: int = 0
    fallback_used: bool = False
    app_future: object = None
    closed: int = 0  # the last attempt whose outcome was taken (it finished, or its walltime expired)
    timer: object = None


class Engine:
    def __init__(self, site: SiteConfig, run_dir: Path):
        self.site = site
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(self.run_dir / "journal.db")
        self._dfk = None
        self._apps: dict[str, object] = {}
        self._lock = threading.RLock()
        self._pending: dict[str, _Pending] = {}
        self._counts = {label: _Counts() for label in site.executors}
        self.reference_calls = 0
        self.stopped: EngineStopped | None = None
        # here, not when executors start: a resume answered wholly from the journal starts none
        if (self.run_dir / SLURM_JOBS).exists() and self._holds_run_lock():  # earlier coordinators are dead
            atomic_write_text(self.run_dir / SLURM_JOBS, json.dumps(cancel_recorded_slurm_jobs(self.run_dir)))

    # ------------------------------------------------------------------ lifecycle
    def _start(self):
        if self._dfk is None:
            import parsl

            # Parsl starts interchange.py / process_worker_pool.py by name: they live beside this Python.
            bindir = str(Path(sys.executable).parent)
            if bindir not in os.environ.get("PATH", "").split(os.pathsep):
                os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
            from parsl.app.python import PythonApp

            from .parsl_config import build_config

            self._dfk = parsl.load(build_config(self.site, self.run_dir, on_submit=self._slurm_job_submitted))
            logging.getLogger("parsl").setLevel(self.site.parsl_log_level)  # Parsl opens its log at DEBUG
            self._apps = {label: PythonApp(execute, data_flow_kernel=self._dfk, executors=[label])
                          for label in self.site.executors}

    def _holds_run_lock(self) -> bool:
        """Is this process the run directory's coordinator (engine/lock.py writes the holder into the lock file)?
        An engine without the lock (`reactforge report` beside a live run) must not cancel that run's jobs."""
        try:
            holder = (self.run_dir / RunLock.NAME).read_text()
        except OSError:
            return False
        return holder.startswith(f"pid {os.getpid()} on {socket.gethostname()} ")

    def _slurm_job_submitted(self, label: str, job_id: str, job_name: str):
        """Parsl submitted a block: add it to slurm_jobs.json, re-read each time, since a report's engine may
        record there too. Never raises: the job runs whether or not it is recorded."""
        entry = {"executor": label, "job_id": str(job_id), "job_name": job_name,
                 "by": f"pid {os.getpid()} on {socket.gethostname()}"}
        path = self.run_dir / SLURM_JOBS
        try:
            with self._lock:
                atomic_write_text(path, json.dumps(_recorded_jobs(path) + [entry], indent=1))
        except OSError as err:
            print(f"warning: SLURM job {job_id} not recorded in {path} ({err})", file=sys.stderr)

    def close(self):
        if self._dfk is not None:
            import parsl

            self._dfk.cleanup()
            parsl.clear()
            self._dfk = None
        self.journal.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ submission
    def submit(self, spec, structures: list[Atoms]) -> Future:
        """Run `spec` on `structures` somewhere; the future gives the result model or raises TaskFailed.

        `future.key` is the task's content hash. Raises EngineStopped once a result could not be recorded."""
        if self.stopped is not None:
            raise self.stopped
        structures = list(structures)
        texts = structure_texts(structures)  # serialised once: for the key and for the worker
        key = task_key(spec, structures, texts)
        resource = KINDS[spec.kind].resource_of(spec)
        label = self.site.executor_for(resource)
        outer: Future = Future()
        outer.key = key  # the task's identity, for provenance (labels record it)
        status, cached, failure_class, error = self.journal.lookup(key) or (None,) * 4
        if status == "done":
            with self._lock:
                self._counts[label].cached += 1
            outer.set_result(_RESULT.validate_json(cached))
            return outer
        if status == "failed" and failure_class in _FINAL:  # the same input would fail the same way again
            with self._lock:
                self._counts[label].cached += 1
            outer.set_exception(TaskFailed(key, spec.kind, failure_class, error))
            return outer
        with self._lock:
            if key in self._pending:  # the same task twice in flight: share one execution
                return self._pending[key].outer
            job = _Pending(key, spec, texts, label, resource, outer)
            if status == "submitted" and failure_class == "scf" and hasattr(spec, "use_fallback"):
                # the killed coordinator had already seen this SCF fail: resume with the fallback settings
                job.fallback_used = True
                job.spec = spec.model_copy(update={"use_fallback": True})
            self._pending[key] = job
            self._counts[label].queued += 1
        self.journal.submitted(key, spec.kind, label, spec.model_dump_json())
        self._launch(job)
        return outer

    def run(self, spec, structures: list[Atoms]):
        return self.submit(spec, structures).result()

    def _context(self, job: _Pending) -> dict:
        ex = self.site.executors[job.label]
        reference = job.resource == "reference"
        workdir = task_dir = self.run_dir / "tasks" / job.spec.kind / job.key[:16]
        if job.attempts > 1:  # an expired attempt may still be running in the first folder
            workdir = workdir / f"attempt{job.attempts}"
        return {
            "workdir": str(workdir),
            "launch": self.site.reference_launch if reference else "",
            "device": ex.device,
            "threads": ex.threads_per_task,
            "env": dict(self.site.reference_env) if reference else {},
            "reference_timeout_s": self.site.reference_timeout_s if reference else None,
            "checkpoint_dir": str(task_dir / "checkpoint"),
            "checkpoint_interval_s": self.site.checkpoint_interval_s,
        }

    def _launch(self, job: _Pending):
        self._start()
        job.attempts += 1
        if job.spec.kind == "singlepoint":
            with self._lock:
                self.reference_calls += 1
        attempt = job.attempts
        fut = self._apps[job.label](job.spec.model_dump_json(), job.structures_text, self._context(job))
        job.app_future = fut
        limit = self.site.walltime_s.get(job.resource)
        if limit:
            job.timer = threading.Timer(limit, self._finished, args=(job, attempt, None, limit))
            job.timer.daemon = True
            job.timer.start()
        fut.add_done_callback(lambda f, job=job, attempt=attempt: self._finished(job, attempt, f))

    def _finished(self, job: _Pending, attempt: int, fut, expired_after: float | None = None):
        """An attempt's outcome: its app future finished, or (fut None) its walltime expired first.
        Whichever comes second is ignored; an expired attempt's late result never counts."""
        with self._lock:
            if job.closed >= attempt:
                return
            job.closed = attempt
        if fut is not None and job.timer is not None:
            job.timer.cancel()
        try:
            self._record(job, fut, expired_after)
        except BaseException as err:  # noqa: BLE001 - an exception escaping a callback is lost, its future never resolves
            self.stopped = EngineStopped(f"could not record {job.spec.kind} task {job.key[:12]}: "
                                         f"{type(err).__name__}: {err}")
            with self._lock:
                self._pending.pop(job.key, None)
            if not job.outer.done():
                job.outer.set_exception(self.stopped)

    def _record(self, job: _Pending, fut, expired_after: float | None = None):
        if expired_after is not None:
            from reactforge.tasks.errors import TransientError

            exc = TransientError(f"the attempt exceeded the site's wall-clock limit for {job.resource} tasks "
                                 f"({expired_after:g} s)")
        else:
            exc = fut.exception()
        if exc is None:
            try:
                result = _RESULT.validate_json(fut.result())
            except Exception as err:  # a result that breaks the contract is a bug, not a label
                exc = err
            else:
                self.journal.done(job.key, result.model_dump_json())
                self._settle(job, "done")
                job.outer.set_result(result)
                return
        cls = classify(exc)
        message = f"{type(exc).__name__}: {exc}"
        self.journal.attempt(job.key, cls, message)
        if cls == "transient" and job.attempts <= job.spec.max_retries:
            self._launch(job)
            return
        if cls == "scf" and not job.fallback_used and hasattr(job.spec, "use_fallback"):
            job.fallback_used = True
            job.spec = job.spec.model_copy(update={"use_fallback": True})
            self._launch(job)
            return
        self.journal.failed(job.key, cls, message)
        self._settle(job, "failed")
        job.outer.set_exception(TaskFailed(job.key, job.spec.kind, cls, message))

    def _settle(self, job: _Pending, outcome: str):
        with self._lock:
            c = self._counts[job.label]
            c.queued -= 1
            setattr(c, outcome, getattr(c, outcome) + 1)
            self._pending.pop(job.key, None)

    # ------------------------------------------------------------------ progress
    def stats(self) -> dict[str, dict[str, int]]:
        """Per executor: queued (waiting, also for a block still pending in the scheduler), running (on a
        worker now), done, failed, cached (answered from the journal), and its blocks by state."""
        with self._lock:
            launched = {label: 0 for label in self._counts}
            for job in self._pending.values():
                rec = getattr(job.app_future, "task_record", None)
                if rec is not None and str(rec.get("status", "")).endswith(("launched", "running")):
                    launched[job.label] += 1
            counts = {label: (c.queued, c.done, c.failed, c.cached) for label, c in self._counts.items()}
        out = {}
        for label, (queued, done, failed, cached) in counts.items():
            running, blocks = self._on_workers(label, launched[label])
            out[label] = {"queued": queued - running, "running": running, "done": done, "failed": failed,
                          "cached": cached, "blocks_pending": blocks.get("PENDING", 0),
                          "blocks_running": blocks.get("RUNNING", 0)}
        return out

    def _on_workers(self, label: str, launched: int) -> tuple[int, dict[str, int]]:
        """How many of the tasks handed to an executor a worker is running, and its blocks by state.

        Parsl marks a task `launched` once the executor has it, even while its block waits in the SLURM
        queue; an HTEX interchange knows which tasks its connected managers hold (no prefetch: held = running)."""
        executor = self._dfk.executors.get(label) if self._dfk is not None else None
        if executor is None:
            return 0, {}
        blocks: dict[str, int] = {}
        for status in getattr(executor, "status_facade", {}).values():  # the poller's last view, no scheduler call
            blocks[status.state.name] = blocks.get(status.state.name, 0) + 1
        client = getattr(executor, "command_client", None)
        if client is None:  # a thread pool: its threads take tasks as they come
            return min(launched, getattr(executor, "max_threads", launched) or launched), blocks
        try:
            managers = client.run("MANAGERS", timeout_s=2)
        except Exception:  # noqa: BLE001 - an interchange that does not answer: nothing is known to run
            return 0, blocks
        held = sum(min(int(m["tasks"]), int(m["worker_count"])) for m in managers if m.get("active", True))
        return min(held, launched), blocks
