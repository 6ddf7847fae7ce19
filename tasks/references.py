"""Reference (labelling) calculators: GFN2-xTB (tblite), EMT, Quantum ESPRESSO pw.x and CASTEP via ASE.

`make_calculator(reference, atoms, ctx, fallback)` builds the ASE calculator of one reference spec;
with `fallback=True` the spec's SCFFallback settings replace the SCF ones (engine failure class `scf`).

k-point convention: every spacing in the specs is in Å⁻¹ with the 2π included (|b_i| = 2π/a_i, as VASP's
KSPACING and the thesis's "0.25 Å⁻¹"): n_i = ceil(2π|b_i| / spacing), 1 along non-periodic directions.
ASE's `kspacing` of the espresso writer and CASTEP's kpoint_mp_spacing omit the 2π, so neither is used
with the spec's number directly.
"""
from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import (
    CalculationFailed,
    Calculator,
    CalculatorSetupError,
    InputError,
    all_changes,
    kptdensity2monkhorstpack,
)
from ase.calculators.castep import Castep
from ase.calculators.espresso import Espresso, EspressoProfile
from ase.units import Ry, kB

from reactforge.schemas.tasks import CastepReference, EMTReference, EspressoReference, XTBReference

from .context import TaskContext
from .errors import SCFNotConverged, TaskError, TransientError


class ReferenceSetupError(TaskError):
    """The reference cannot run here (binary or pseudopotential missing, bad input): retrying cannot help."""

    failure_class = "error"


class ReferenceFailed(TaskError):
    """The reference code stopped with an error of its own (not SCF, not the launcher)."""

    failure_class = "error"


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


VACUUM_GAP_A = 5.0


def vacuum_directions(atoms: Atoms, min_gap_A: float = VACUUM_GAP_A) -> list[bool]:
    """Per cell vector: do the atoms leave a gap of at least min_gap_A across the planes it spans
    (a slab's vacuum, a molecule's box)? Such a direction needs a single k-point."""
    if len(atoms) == 0:
        return [False] * 3
    frac = np.sort(np.mod(atoms.get_scaled_positions(wrap=False), 1.0), axis=0)
    out = []
    for i in range(3):
        if not atoms.pbc[i]:  # a non-periodic direction may have no cell vector at all
            out.append(False)
            continue
        gap = np.diff(np.append(frac[:, i], frac[0, i] + 1.0)).max()  # widest empty stretch, fractional
        spacing = 1.0 / np.linalg.norm(atoms.cell.reciprocal()[i])  # of the planes the other two vectors span
        out.append(bool(gap * spacing >= min_gap_A))
    return out


def kpoint_grid(atoms: Atoms, spacing_per_A: float | None) -> tuple[int, int, int]:
    """Monkhorst-Pack grid with at most `spacing_per_A` (2π included) between k-points; one k-point
    along a non-periodic direction and across a vacuum gap (a slab's normal: VASP's KSPACING and
    ASE's density rule would give a 23 Å slab cell 2 k-points there, doubling the cost for nothing)."""
    if spacing_per_A is None or not atoms.pbc.any():
        return (1, 1, 1)
    grid = kptdensity2monkhorstpack(atoms, kptdensity=1.0 / spacing_per_A, even=False)
    return tuple(1 if vac else int(n) for n, vac in zip(grid, vacuum_directions(atoms)))


def is_periodic_3d(atoms: Atoms) -> bool:
    return bool(atoms.pbc.all() and atoms.cell.rank == 3)


def make_calculator(reference, atoms: Atoms, ctx: TaskContext, fallback: bool = False, timeout_s: float | None = None):
    """The ASE calculator of `reference` for `atoms`, working in ctx.workdir."""
    if isinstance(reference, XTBReference):
        return _xtb(reference, fallback)
    if isinstance(reference, EMTReference):
        from ase.calculators.emt import EMT

        return EMT()
    if isinstance(reference, EspressoReference):
        return _espresso(reference, atoms, ctx, fallback, timeout_s)
    if isinstance(reference, CastepReference):
        return _castep(reference, atoms, ctx, fallback, timeout_s)
    raise TypeError(f"unknown reference spec {type(reference).__name__}")


class SCFFallbackCalculator(Calculator):
    """The reference calculator of a multi-step reference task (NEB, optimisation): a calculation whose
    SCF does not converge is redone once with the spec's SCFFallback settings, as the engine does for a
    single point. Otherwise one image's SCF would end a whole reference NEB (a direct GFN2-xTB NEB of
    the quickstart stopped that way). `fallback_calls` counts the redone calculations.

    Every calculation starts from the code's own initial guess, as a labelling single point does, so an
    energy depends on the geometry alone. tblite otherwise restarts from the previous call's charges:
    along a direct GFN2-xTB NEB of the quickstart, an image whose fresh SCF does not converge was
    "converged" from that restart onto a spurious solution, and the following restarts walked it to
    20 eV below the fresh energy, where the band followed. Only when both fresh attempts fail does an
    xTB image continue from its own last converged SCF (what a DFT user restarting from the previous
    step's wavefunction does); the next calculation starts fresh again, so such a result cannot seed
    a chain. `continued_calls` counts them (they are also in `fallback_calls`)."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, reference, atoms: Atoms, ctx: TaskContext):
        super().__init__()
        self.reference, self.ctx = reference, ctx
        self.fallback_calls = self.continued_calls = 0
        self._last = None  # the calculator of this image's last converged SCF

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        attempts = [lambda: make_calculator(self.reference, self.atoms, self.ctx),
                    lambda: make_calculator(self.reference, self.atoms, self.ctx, fallback=True)]
        if isinstance(self.reference, XTBReference) and self._last is not None:
            attempts.append(lambda last=self._last: last)
        for k, attempt in enumerate(attempts):
            calc = attempt()
            try:
                self.results = _evaluate(calc, self.atoms, properties)
            except Exception as exc:
                error = classify_failure(self.reference, Path(self.ctx.workdir), exc)
                if not isinstance(error, SCFNotConverged):
                    raise
                if k == len(attempts) - 1:  # classified, so the engine records an `scf` failure (final)
                    raise error from exc
                self.fallback_calls += 1
                continue
            if k == 2:  # the third attempt: this image's own last converged SCF
                self.continued_calls += 1
            self._last = calc
            return


def _evaluate(calc, atoms: Atoms, properties) -> dict:
    a = atoms.copy()
    a.calc = calc
    energy = a.get_potential_energy()
    out = {"energy": energy, "free_energy": energy, "forces": a.get_forces(apply_constraint=False)}
    if "stress" in properties:
        out["stress"] = a.get_stress()
    return out


def reference_label(reference) -> str:
    """'code:method' as stored with every label."""
    if isinstance(reference, XTBReference):
        return f"xtb:{reference.method}"
    if isinstance(reference, EspressoReference):
        return "espresso:pw.x"
    if isinstance(reference, CastepReference):
        return f"castep:{reference.xc_functional}"
    return reference.code


# ----------------------------------------------------------------------------------------------
# GFN-xTB (tblite, in process)
# ----------------------------------------------------------------------------------------------


def _xtb(ref: XTBReference, fallback: bool):
    from tblite.ase import TBLite

    params = dict(
        method=ref.method,
        accuracy=ref.accuracy,
        electronic_temperature=ref.electronic_temperature_K,
        max_iterations=ref.max_iterations,
        verbosity=0,
    )
    if fallback:
        fb = ref.fallback
        # tblite's Broyden damping plays the role of the mixing β; a smearing width maps to T_el = w / k_B.
        params.update(max_iterations=fb.max_scf_steps, mixer_damping=fb.mixing_beta)
        if fb.smearing_width_eV is not None:
            params["electronic_temperature"] = fb.smearing_width_eV / kB
    return TBLite(**params)


# ----------------------------------------------------------------------------------------------
# External codes: one launcher for pw.x and CASTEP
# ----------------------------------------------------------------------------------------------


def _command(ctx: TaskContext, executable: str) -> str:
    return f"{ctx.launch} {executable}".strip()


def _launch_env(ctx: TaskContext) -> dict[str, str]:
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


# ----------------------------------------------------------------------------------------------
# Quantum ESPRESSO
# ----------------------------------------------------------------------------------------------


TBLITE_SCF_MARKER = "SCF not converged"


def classify_failure(ref, workdir: Path, exc: Exception) -> TaskError:
    """The engine's failure class of an exception a reference calculation raised in `workdir`: SCF,
    transient launcher/node trouble, set-up error or a failure of the code itself."""
    code = ref.code
    if isinstance(ref, EspressoReference):
        if espresso_scf_failed(workdir):
            return SCFNotConverged(f"espresso: SCF not converged in {workdir}")
        if isinstance(exc, subprocess.CalledProcessError):
            text = espresso_output_text(workdir) + "\n" + (exc.stderr or "")
            return classify_launch_failure(code, exc.returncode, text, espresso_error(workdir))
    if isinstance(ref, CastepReference):
        castep_out = workdir / "castep.castep"
        if castep_out.is_file() and castep_scf_failed(castep_out.read_text(errors="replace")):
            return SCFNotConverged(f"castep: SCF not converged in {workdir}")
        if isinstance(exc, subprocess.CalledProcessError):
            text = "\n".join(
                p.read_text(errors="replace")[-20000:]
                for p in (workdir / "castep.castep", workdir / "castep.stderr", workdir / "castep.stdout")
                if p.is_file()
            )
            return classify_launch_failure(code, exc.returncode, text + "\n" + (exc.stderr or ""))
    if isinstance(ref, XTBReference) and TBLITE_SCF_MARKER in str(exc):
        return SCFNotConverged(f"xtb: {exc}")
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


def _espresso(ref: EspressoReference, atoms: Atoms, ctx: TaskContext, fallback: bool, timeout_s: float | None):
    if atoms.cell.rank < 3:
        raise ReferenceSetupError("espresso: the structure needs a 3D cell (a box around a molecule)")
    missing = sorted(set(atoms.get_chemical_symbols()) - set(ref.pseudopotentials))
    if missing:
        raise ReferenceSetupError(f"espresso: no pseudopotential given for {missing} (reference.pseudopotentials)")
    for element, name in ref.pseudopotentials.items():
        if element in atoms.get_chemical_symbols() and not (Path(ref.pseudo_dir) / name).is_file():
            raise ReferenceSetupError(f"espresso: pseudopotential {name} for {element} not in {ref.pseudo_dir}")

    if ref.spin_polarised and not atoms.get_initial_magnetic_moments().any() and \
            "tot_magnetization" not in ref.extra_input.get("system", {}):
        # pw.x stops with "some starting_magnetization MUST be set"; say so before launching it.
        raise ReferenceSetupError("espresso: spin_polarised needs initial magnetic moments on the structure "
                                  "(or extra_input system.tot_magnetization)")

    mixing_beta, maxstep, width = ref.mixing_beta, ref.max_scf_steps, ref.smearing_width_eV
    if fallback:
        mixing_beta, maxstep = ref.fallback.mixing_beta, ref.fallback.max_scf_steps
        width = ref.fallback.smearing_width_eV or width
    periodic = is_periodic_3d(atoms)
    input_data = {
        "control": {"calculation": "scf", "tprnfor": True, "tstress": periodic},
        "system": {
            "ecutwfc": ref.ecutwfc_Ry,
            "ecutrho": ref.ecutrho_Ry or 8.0 * ref.ecutwfc_Ry,
            "occupations": "smearing",
            "smearing": ref.smearing,
            "degauss": width / Ry,
            "nspin": 2 if ref.spin_polarised else 1,
        },
        "electrons": {"conv_thr": ref.conv_thr_eV / Ry, "mixing_beta": mixing_beta, "electron_maxstep": maxstep},
    }
    for section, entries in ref.extra_input.items():
        input_data.setdefault(section, {}).update(entries)

    grid = kpoint_grid(atoms, ref.kspacing_per_A)
    profile = LaunchedEspressoProfile(
        command=_command(ctx, ref.executable),
        pseudo_dir=ref.pseudo_dir,
        env=_launch_env(ctx),
        timeout_s=timeout_s,
        binaries=required_binaries(ctx, ref.executable),
    )
    return Espresso(
        profile=profile,
        input_data=input_data,
        pseudopotentials=dict(ref.pseudopotentials),
        # Γ-only grids use pw.x's Γ tricks (half the memory and time of a 1×1×1 mesh).
        kpts=None if grid == (1, 1, 1) else grid,
        directory=str(ctx.workdir),
    )


class LaunchedEspressoProfile(EspressoProfile):
    """EspressoProfile that runs pw.x with the task's environment, a timeout and the stderr kept."""

    def __init__(self, command, pseudo_dir, env=None, timeout_s=None, binaries=(), **kwargs):
        super().__init__(command, pseudo_dir, **kwargs)
        self.env = dict(env or {})
        self.timeout_s = timeout_s
        self.binaries = list(binaries)

    def run(self, directory, inputfile, outputfile, errorfile=None, append=False):
        run_command(self.get_command(inputfile), Path(directory), outputfile, errorfile or "espresso.err",
                    self.env, self.timeout_s, self.binaries)


ESPRESSO_SCF_MARKER = "convergence NOT achieved"


def espresso_scf_failed(workdir: Path) -> bool:
    out = Path(workdir) / "espresso.pwo"
    return out.is_file() and ESPRESSO_SCF_MARKER in out.read_text(errors="replace")


def espresso_error(workdir: Path) -> str | None:
    """pw.x's own error box ("Error in routine ..."), if it wrote one."""
    out = Path(workdir) / "espresso.pwo"
    text = out.read_text(errors="replace") if out.is_file() else ""
    i = text.find("Error in routine")
    if i < 0:
        return None
    lines = [line.strip() for line in text[i:].splitlines()[:4]]
    return "\n".join(line for line in lines if line and not line.startswith("%"))


def espresso_output_text(workdir: Path) -> str:
    parts = []
    for name in ("espresso.pwo", "espresso.err", "CRASH"):
        p = Path(workdir) / name
        if p.is_file():
            parts.append(p.read_text(errors="replace")[-20000:])
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------
# CASTEP
# ----------------------------------------------------------------------------------------------

# CASTEP's own words for an SCF that stopped at max_scf_cycles (single point continues regardless).
CASTEP_SCF_MARKERS = (
    "max. SCF cycles performed but system has not reached the groundstate",
    "electronic minimisation did not converge",
)


def castep_last_record(text: str) -> str:
    """The last run of a .castep file (CASTEP appends each run to the same file, like ASE's reader assumes)."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines)
              if "CASTEP" in line and ("Welcome" in line or "Materials Studio" in line)]
    return "".join(lines[starts[-1]:]) if starts else text


def castep_scf_failed(text: str) -> bool:
    record = castep_last_record(text)
    return any(m in record for m in CASTEP_SCF_MARKERS)


class LaunchedCastep(Castep):
    """ASE's Castep, run through `run_command` (environment, timeout, exit status kept)."""

    def prepare_input_files(self, atoms=None, force_write=None):
        # ASE's .cell writer takes the keywords (k-points, species_pot) from atoms.calc, not from this
        # calculator: make sure they are the same object.
        if atoms is not None and atoms.calc is not self:
            atoms = atoms.copy()
            atoms.calc = self
        super().prepare_input_files(atoms, force_write)

    def run(self):
        self._calls += 1
        argv = shlex.split(self._castep_command) + [self._seed]
        run_command(argv, Path(self._directory), f"{self._seed}.stdout", f"{self._seed}.stderr",
                    self.launch_env, self.launch_timeout_s, self.launch_binaries)
        err = Path(self._directory) / f"{self._seed}.0001.err"
        if err.is_file() and err.read_text(errors="replace").strip():
            self._error = err.read_text(errors="replace")
            raise ReferenceFailed(f"castep stopped with an error file {err}:\n{self._error[-3000:]}")


def _castep(ref: CastepReference, atoms: Atoms, ctx: TaskContext, fallback: bool, timeout_s: float | None):
    if atoms.cell.rank < 3:
        raise ReferenceSetupError("castep: the structure needs a 3D cell (a box around a molecule)")
    executable = ref.executable or ("castep.mpi" if ctx.launch else "castep.serial")
    command = _command(ctx, executable)
    kwargs = {"castep_pp_path": ref.pseudo_dir} if ref.pseudo_dir else {}
    # keyword_tolerance=3: no castep_keywords.json is generated from a binary (none exists off-site).
    calc = LaunchedCastep(directory=str(ctx.workdir), label="castep", castep_command=command,
                           keyword_tolerance=3, **kwargs)
    # Set through __dict__: Castep.__setattr__ would take these names for CASTEP keywords.
    calc.__dict__["launch_env"] = _launch_env(ctx)
    calc.__dict__["launch_timeout_s"] = timeout_s
    calc.__dict__["launch_binaries"] = required_binaries(ctx, executable)
    calc._rename_existing_dir = False  # ctx.workdir belongs to the engine: never move it
    calc._export_settings = False
    calc._link_pspots = bool(ref.pseudo_dir)

    mixing, max_cycles, width = ref.mixing_beta, ref.max_scf_steps, ref.smearing_width_eV
    if fallback:
        mixing, max_cycles = ref.fallback.mixing_beta, ref.fallback.max_scf_steps
        width = ref.fallback.smearing_width_eV or width
    p = calc.param
    p.task = "SinglePoint"
    p.xc_functional = ref.xc_functional
    p.cut_off_energy = ref.cut_off_energy_eV  # CASTEP's default energy unit is eV
    p.fix_occupancy = False
    p.smearing_scheme = "Gaussian"
    p.smearing_width = width
    p.elec_energy_tol = ref.elec_energy_tol_eV / len(atoms)  # CASTEP: tolerance per atom
    p.mix_charge_amp = mixing
    p.max_scf_cycles = max_cycles
    p.calculate_stress = is_periodic_3d(atoms)
    p.write_checkpoint = "none"
    for key, value in ref.extra_param.items():
        setattr(p, key, value)

    if ref.kpoint_spacing_per_A is not None and is_periodic_3d(atoms) and not any(vacuum_directions(atoms)):
        calc.cell.kpoint_mp_spacing = float(ref.kpoint_spacing_per_A / (2 * np.pi))
    else:
        calc.cell.kpoint_mp_grid = "%d %d %d" % kpoint_grid(atoms, ref.kpoint_spacing_per_A)
    for element in sorted(set(atoms.get_chemical_symbols())):
        if element in ref.pseudopotentials:
            calc.cell.species_pot = (element, ref.pseudopotentials[element])
    return calc


def read_castep_output(path: str | Path) -> Atoms:
    """Last configuration of a .castep output, with its calculator results (ASE's reader).

    Raises SCFNotConverged if CASTEP reports that the SCF stopped before self-consistency."""
    import warnings

    from ase.io import read

    from .errors import SCFNotConverged

    text = Path(path).read_text(errors="replace")
    if castep_scf_failed(text):
        raise SCFNotConverged(f"castep: SCF not converged ({path})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reader re-emits CASTEP's own warnings
        return read(path, format="castep-castep", index=-1)
