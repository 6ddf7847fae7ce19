"""CASTEP through ASE's Castep calculator (the binary exists only on sites; inputs and outputs are tested)."""
from __future__ import annotations

import shlex
import subprocess
import warnings
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.castep import Castep

from reactforge.schemas.tasks import CastepReference

from ..context import TaskContext
from ..errors import ReferenceFailed, ReferenceSetupError, SCFNotConverged, TaskError
from .kpoints import is_periodic_3d, kpoint_grid, vacuum_directions
from .launch import classify_launch_failure, launch_command, launch_env, output_tails, required_binaries, run_command

# CASTEP's own words for an SCF that stopped at max_scf_cycles (single point continues regardless).
CASTEP_SCF_MARKERS = (
    "max. SCF cycles performed but system has not reached the groundstate",
    "electronic minimisation did not converge",
)


def calculator(ref: CastepReference, atoms: Atoms, ctx: TaskContext, fallback: bool = False,
               timeout_s: float | None = None):
    if atoms.cell.rank < 3:
        raise ReferenceSetupError("castep: the structure needs a 3D cell (a box around a molecule)")
    executable = ref.executable or ("castep.mpi" if ctx.launch else "castep.serial")
    command = launch_command(ctx, executable)
    kwargs = {"castep_pp_path": ref.pseudo_dir} if ref.pseudo_dir else {}
    # keyword_tolerance=3: no castep_keywords.json is generated from a binary (none exists off-site).
    calc = LaunchedCastep(directory=str(ctx.workdir), label="castep", castep_command=command,
                          keyword_tolerance=3, **kwargs)
    # Set through __dict__: Castep.__setattr__ would take these names for CASTEP keywords.
    calc.__dict__["launch_env"] = launch_env(ctx)
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


def label(ref: CastepReference) -> str:
    return f"castep:{ref.xc_functional}"


def castep_last_record(text: str) -> str:
    """The last run of a .castep file (CASTEP appends each run to the same file, like ASE's reader assumes)."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines)
              if "CASTEP" in line and ("Welcome" in line or "Materials Studio" in line)]
    return "".join(lines[starts[-1]:]) if starts else text


def castep_scf_failed(text: str) -> bool:
    record = castep_last_record(text)
    return any(m in record for m in CASTEP_SCF_MARKERS)


def scf_failed(workdir: Path, seed: str = "castep") -> bool:
    """Does <seed>.castep in workdir record an unconverged SCF in its last run?"""
    out = Path(workdir) / f"{seed}.castep"
    return out.is_file() and castep_scf_failed(out.read_text(errors="replace"))


def classify(ref: CastepReference, workdir: Path, exc: Exception) -> TaskError | None:
    if scf_failed(workdir):
        return SCFNotConverged(f"castep: SCF not converged in {workdir}")
    if isinstance(exc, subprocess.CalledProcessError):
        text = output_tails([workdir / "castep.castep", workdir / "castep.stderr", workdir / "castep.stdout"])
        return classify_launch_failure(ref.code, exc.returncode, text + "\n" + (exc.stderr or ""))
    return None


def read_castep_output(path: str | Path) -> Atoms:
    """Last configuration of a .castep output, with its calculator results (ASE's reader).

    Raises SCFNotConverged if CASTEP reports that the SCF stopped before self-consistency."""
    from ase.io import read

    text = Path(path).read_text(errors="replace")
    if castep_scf_failed(text):
        raise SCFNotConverged(f"castep: SCF not converged ({path})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reader re-emits CASTEP's own warnings
        return read(path, format="castep-castep", index=-1)
