"""Quantum ESPRESSO pw.x through ASE's Espresso calculator, launched with the site's prefix."""
from __future__ import annotations

import subprocess
from pathlib import Path

from ase import Atoms
from ase.calculators.espresso import Espresso, EspressoProfile
from ase.units import Ry

from reactforge.schemas.tasks import EspressoReference

from ..context import TaskContext
from ..errors import ReferenceSetupError, SCFNotConverged, TaskError
from .kpoints import is_periodic_3d, kpoint_grid
from .launch import classify_launch_failure, launch_command, launch_env, output_tails, required_binaries, run_command

ESPRESSO_SCF_MARKER = "convergence NOT achieved"


def calculator(ref: EspressoReference, atoms: Atoms, ctx: TaskContext, fallback: bool = False,
               timeout_s: float | None = None):
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
        command=launch_command(ctx, ref.executable),
        pseudo_dir=ref.pseudo_dir,
        env=launch_env(ctx),
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


def label(ref: EspressoReference) -> str:
    return "espresso:pw.x"


def scf_failed(workdir: Path, output: str = "espresso.pwo") -> bool:
    """Did the pw.x run whose output is `output` in workdir stop with its SCF unconverged?"""
    out = Path(workdir) / output
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
    return output_tails([Path(workdir) / name for name in ("espresso.pwo", "espresso.err", "CRASH")])


def classify(ref: EspressoReference, workdir: Path, exc: Exception) -> TaskError | None:
    if scf_failed(workdir):
        return SCFNotConverged(f"espresso: SCF not converged in {workdir}")
    if isinstance(exc, subprocess.CalledProcessError):
        text = espresso_output_text(workdir) + "\n" + (exc.stderr or "")
        return classify_launch_failure(ref.code, exc.returncode, text, espresso_error(workdir))
    return None
