"""Running an external reference code (pw.x, CASTEP, gipaw.x) and classifying how it failed."""
from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

from ase.calculators.calculator import CalculationFailed, CalculatorSetupError, InputError

from ..context import TaskContext
from ..errors import ReferenceFailed, ReferenceSetupError, TaskError, TransientError

# Launcher / scheduler messages of a lost node, a walltime kill or a broken MPI start-up (SLURM, Open MPI,
# MPICH/Hydra): worth one more try unchanged. Generic lines such as "srun: error: task 0: Exited with exit
# code 1" or Open MPI's help footer are deliberately absent: they follow any failing program.
TRANSIENT_MARKERS = (
    "due to time limit",
    "due to node failure",
    "cancelled at",
    "slurmstepd: error: *** step",
    "slurmstepd: error: *** job",
    "srun: error: unable to create step",
    "srun: error: node failure",
    "srun: job step aborted",
    "socket timed out",
    "orte has lost communication",
    "orte was unable to reliably start",
    "prte has lost communication",
    "daemon has unexpectedly failed",
    "exited on signal 9",
    "exited on signal 15",
    "communication connection failure",
    "connection reset by peer",
)

# A launcher that runs but cannot find or execute the code: a site configuration error, not transient.
MISSING_BINARY_MARKERS = (
    "was unable to find the specified executable",
    "could not access or execute an executable",
    "unable to find the executable",
    "command not found",
    "execve error",
)


def launch_command(ctx: TaskContext, executable: str) -> str:
    return f"{ctx.launch} {executable}".strip()


def launch_env(ctx: TaskContext) -> dict[str, str]:
    # One OpenMP thread per MPI rank unless the site says otherwise (oversubscription slows pw.x/CASTEP).
    return {"OMP_NUM_THREADS": str(ctx.threads), **ctx.env}


def required_binaries(ctx: TaskContext, executable: str) -> list[str]:
    """The launcher (first word of the site's launch prefix) and the code (first word of the executable)."""
    words = [shlex.split(ctx.launch)[0]] if ctx.launch.strip() else []
    return words + [shlex.split(executable)[0]]


def check_binaries(binaries: list[str], env: dict[str, str], command: str) -> None:
    """Fail early, and not as a transient error, when the launcher or the code is not on PATH."""
    path = {**os.environ, **env}.get("PATH")
    for word in binaries:
        if shutil.which(word, path=path) is None:
            raise ReferenceSetupError(
                f"'{word}' not found on PATH (command: {command!r}); install it or load its module in the "
                f"site's worker_init"
            )


def run_command(argv: list[str], cwd: Path, stdout_name: str, stderr_name: str, env: dict[str, str],
                timeout_s: float | None, binaries: list[str]) -> None:
    """Run a reference code; raises subprocess.CalledProcessError (with stderr text), TransientError or
    ReferenceSetupError."""
    check_binaries(binaries, env, shlex.join(argv))
    cwd = Path(cwd)
    with open(cwd / stdout_name, "wb") as out, open(cwd / stderr_name, "wb") as err:
        try:
            # Own session, so a timeout can kill mpirun/srun and every rank it started.
            proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, env={**os.environ, **env},
                                    start_new_session=True)
        except FileNotFoundError as exc:
            raise ReferenceSetupError(f"cannot start {argv[0]!r}: {exc}") from exc
        except OSError as exc:  # e.g. EAGAIN: no processes left on the node
            raise TransientError(f"cannot start {argv[0]!r}: {exc}") from exc
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TransientError(f"{argv[0]} exceeded the reference timeout of {timeout_s} s") from exc
    if rc != 0:
        stderr = (cwd / stderr_name).read_text(errors="replace")
        raise subprocess.CalledProcessError(rc, argv, stderr=stderr)


def output_tails(paths: list[Path], chars: int = 20000) -> str:
    """The last `chars` characters of each of the files that exist, joined: what a failure is judged on."""
    return "\n".join(p.read_text(errors="replace")[-chars:] for p in paths if p.is_file())


def classify_launch_failure(code: str, returncode: int, text: str, code_error: str | None = None) -> TaskError:
    """The failure class of a reference run that exited non-zero (SCF is checked by the caller first).

    `code_error`: the code's own error report, if it wrote one (then the launcher's lines are consequences)."""
    low = text.lower()
    tail = "\n".join(text.strip().splitlines()[-15:])
    if any(m in low for m in MISSING_BINARY_MARKERS):
        return ReferenceSetupError(f"{code}: the launcher could not start the code (exit {returncode}):\n{tail}")
    if code_error:
        return ReferenceFailed(f"{code} stopped with an error (exit {returncode}):\n{code_error}")
    # Killed from outside (SIGKILL/SIGTERM directly, or 128+signal through a shell/launcher): node loss,
    # walltime or pre-emption.
    if returncode < 0 or returncode in (137, 143) or any(m in low for m in TRANSIENT_MARKERS):
        return TransientError(f"{code}: launcher/node failure (exit {returncode}):\n{tail}")
    return ReferenceFailed(f"{code} failed (exit {returncode}):\n{tail}")


def classify_exception(code: str, exc: Exception) -> TaskError:
    """The failure class of an exception no code-specific rule recognised."""
    if isinstance(exc, (InputError, CalculatorSetupError)):  # configuration: retrying unchanged cannot help
        return ReferenceSetupError(f"{code}: {exc}")
    if isinstance(exc, CalculationFailed):
        return ReferenceFailed(f"{code}: {exc}")
    # Shared-filesystem hiccups and lost connections on a cluster node; other OS errors are not transient.
    if isinstance(exc, (ConnectionError, TimeoutError)) or (
        isinstance(exc, OSError) and exc.errno in (errno.EIO, errno.ESTALE, errno.EAGAIN, errno.ETIMEDOUT)
    ):
        return TransientError(f"{code}: {type(exc).__name__}: {exc}")
    return ReferenceFailed(f"{code}: {type(exc).__name__}: {exc}")
