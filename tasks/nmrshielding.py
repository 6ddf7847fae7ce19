"""`nmrshielding` task: magnetic shielding σ (ppm) and EFG V (a.u.) tensors of every atom of one structure.

code='castep'      writes <seed>.cell / <seed>.param (task: magres, magres_task: nmr = shielding + EFG,
                   or shielding only), runs CASTEP through the site's launch prefix and reads <seed>.magres.
code='qe-gipaw'    pw.x SCF (prefix 'gipaw'), then gipaw.x with job='nmr' (and job='efg'); gipaw.x ≥ 7 writes
                   gipaw.nmr.magres / gipaw.efg.magres, read with the same magres reader. Needs GIPAW
                   pseudopotentials (with reconstruction data) named in spec.pseudopotentials.
code='nwchem'      molecules and clusters: NWChem GIAO shieldings and EFGs (task scf|dft property) in the
                   spec's Gaussian basis; the tensors are parsed from the output and written as
                   nwchem.magres, which is what the task then reads, as for the other codes.
code='precomputed' reads spec.magres_file (any CASTEP, QE-GIPAW or NWChem-made .magres).
Codes reorder atoms (CASTEP groups them by species), so magres atoms are matched back to the input
structure by position; a magres file of another structure is an error, not a silently wrong label.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import warnings
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.units import Bohr, Ha, Ry

from reactforge.schemas.results import NMRShieldingResult
from reactforge.schemas.tasks import NMRShieldingSpec

from .context import TaskContext
from .errors import ReferenceFailed, ReferenceSetupError, SCFNotConverged, UnphysicalResult
from .nmr.tensors import read_magres, write_magres
from .references import castep, espresso
from .references.kpoints import kpoint_grid
from .references.launch import (
    classify_launch_failure,
    launch_env,
    output_tails,
    required_binaries,
    run_command,
)
from .structures import plain_atoms

SEED = "magres"


def run(spec: NMRShieldingSpec, structures: list[Atoms], ctx: TaskContext) -> NMRShieldingResult:
    if len(structures) > 1:
        raise ValueError(f"nmrshielding takes one structure, got {len(structures)}")
    atoms = structures[0] if structures else None
    if spec.code == "precomputed":
        magres, source = read_magres_file(spec.magres_file), f"precomputed:{spec.magres_file}"
    elif atoms is None:
        raise ValueError(f"nmrshielding with code '{spec.code}' needs the structure")
    elif spec.code == "castep":
        magres, source = _run_castep(spec, atoms, ctx), f"castep:{spec.xc_functional}"
    elif spec.code == "nwchem":
        magres, source = _run_nwchem(spec, atoms, ctx), f"nwchem:{spec.method}/{spec.basis}"
    else:
        magres, source = _run_gipaw(spec, atoms, ctx), f"qe-gipaw:{spec.xc_functional}"
    return to_result(magres, atoms, source, spec.efg)


def read_magres_file(path: str | Path | None) -> Atoms:
    if path is None:
        raise ValueError("code='precomputed' needs magres_file")
    if not Path(path).is_file():
        raise FileNotFoundError(f"magres_file {path} does not exist")
    return read_magres(path, shielding=True)


def match_atoms(reference: Atoms, other: Atoms, tol_A: float = 1e-3) -> np.ndarray:
    """perm with other[perm[i]] the atom of reference[i] (same element, same position modulo the cell)."""
    if len(reference) != len(other):
        raise ValueError(f"magres has {len(other)} atoms, the structure {len(reference)}")
    d = other.positions[None, :, :] - reference.positions[:, None, :]
    if reference.cell.rank == 3:
        frac = np.linalg.solve(reference.cell.array.T, d.reshape(-1, 3).T).T
        frac[:, reference.pbc] -= np.round(frac[:, reference.pbc])
        d = (frac @ reference.cell.array).reshape(d.shape)
    dist = np.linalg.norm(d, axis=-1)
    perm = dist.argmin(axis=1)
    ok = (dist[np.arange(len(reference)), perm] < tol_A) & (
        np.array(other.get_chemical_symbols())[perm] == np.array(reference.get_chemical_symbols()))
    if not ok.all() or len(set(perm)) != len(perm):
        bad = np.where(~ok)[0][:5].tolist()
        raise ValueError(f"magres atoms do not match the structure (first unmatched atoms {bad}, tolerance {tol_A} Å)")
    return perm


def to_result(magres: Atoms, atoms: Atoms | None, source: str, efg: bool = True) -> NMRShieldingResult:
    perm = np.arange(len(magres)) if atoms is None else match_atoms(atoms, magres)
    ms = magres.get_array("ms")[perm]
    efg_au = magres.get_array("efg")[perm] if efg and "efg" in magres.arrays else None
    if efg and efg_au is None:
        raise UnphysicalResult(f"{source}: EFG tensors requested but none in the magres output")
    for name, t in (("shielding", ms), ("efg", efg_au)):
        if t is not None and not np.isfinite(t).all():
            raise UnphysicalResult(f"{source}: non-finite {name} tensors")
    out = plain_atoms(atoms if atoms is not None else magres)
    return NMRShieldingResult(atoms=out, shielding_ppm=ms.tolist(),
                              efg_au=None if efg_au is None else efg_au.tolist(), source=source)


# ---------------------------------------------------------------------------------------------- CASTEP


def castep_inputs(spec: NMRShieldingSpec, atoms: Atoms) -> tuple[str, str]:
    """(.cell, .param) text of a CASTEP magres calculation."""
    import io

    from ase.io import write

    if atoms.cell.rank < 3:
        raise ReferenceSetupError("castep: the structure needs a 3D cell (a box around a molecule)")
    buf = io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ASE looks for a CASTEP binary to build its keyword list
        write(buf, atoms, format="castep-cell", positions_frac=True, precision=10)
    cell = buf.getvalue()
    cell += "\nKPOINTS_MP_GRID %d %d %d\n" % kpoint_grid(atoms, spec.kpoint_spacing_per_A)
    if spec.pseudopotentials:
        cell += "\n%BLOCK SPECIES_POT\n"
        for element in sorted(set(atoms.get_chemical_symbols())):
            if element in spec.pseudopotentials:
                cell += f"{element} {spec.pseudopotentials[element]}\n"
        cell += "%ENDBLOCK SPECIES_POT\n"
    param = {
        "TASK": "MAGRES",
        "MAGRES_TASK": "NMR" if spec.efg else "SHIELDING",
        "XC_FUNCTIONAL": spec.xc_functional,
        "CUT_OFF_ENERGY": f"{spec.cut_off_energy_eV} eV",
        "FIX_OCCUPANCY": "TRUE",  # insulators: shielding needs occupied/empty separation
        "ELEC_ENERGY_TOL": f"{spec.elec_energy_tol_eV / len(atoms):.3e} eV",  # CASTEP: per atom
        "MAX_SCF_CYCLES": spec.max_scf_steps,
        "WRITE_CHECKPOINT": "NONE",
    }
    param.update({k.upper(): v for k, v in spec.extra_param.items()})
    text = "".join(f"{k} : {v}\n" for k, v in param.items())
    return cell, text


def _run_castep(spec: NMRShieldingSpec, atoms: Atoms, ctx: TaskContext) -> Atoms:
    work = Path(ctx.workdir)
    cell, param = castep_inputs(spec, atoms)
    _write(work / f"{SEED}.cell", cell)
    _write(work / f"{SEED}.param", param)
    executable = spec.executable or ("castep.mpi" if ctx.launch else "castep.serial")
    argv = shlex.split(ctx.launch) + shlex.split(executable) + [SEED]
    env = launch_env(ctx)
    if spec.pseudo_dir:
        env["PSPOT_DIR"] = spec.pseudo_dir
    _launch(argv, work, "castep", env, spec.timeout_s, required_binaries(ctx, executable))
    if castep.scf_failed(work, SEED):
        raise SCFNotConverged(f"castep: SCF not converged ({work / f'{SEED}.castep'})")
    err = sorted(work.glob(f"{SEED}.*.err"))
    if err and err[0].read_text(errors="replace").strip():
        raise ReferenceFailed(f"castep stopped with an error file {err[0]}:\n{err[0].read_text()[-3000:]}")
    magres = work / f"{SEED}.magres"
    if not magres.is_file():
        raise ReferenceFailed(f"castep finished without writing {magres}")
    return read_magres_file(magres)


# ---------------------------------------------------------------------------------------------- QE-GIPAW


def gipaw_inputs(spec: NMRShieldingSpec, atoms: Atoms) -> tuple[str, dict[str, str]]:
    """(pw.x SCF input, {job: gipaw.x input}) for prefix 'gipaw' in outdir 'out'."""
    import io

    from ase.io.espresso import write_espresso_in

    if atoms.cell.rank < 3:
        raise ReferenceSetupError("qe-gipaw: the structure needs a 3D cell (a box around a molecule)")
    missing = sorted(set(atoms.get_chemical_symbols()) - set(spec.pseudopotentials))
    if missing:
        raise ReferenceSetupError(f"qe-gipaw: no GIPAW pseudopotential given for {missing} (pseudopotentials)")
    ecutwfc = spec.cut_off_energy_eV / Ry
    input_data = {
        "control": {"calculation": "scf", "prefix": "gipaw", "outdir": "out",
                    "pseudo_dir": spec.pseudo_dir or "."},
        "system": {"ecutwfc": ecutwfc, "ecutrho": (spec.ecutrho_eV / Ry) if spec.ecutrho_eV else 4 * ecutwfc,
                   "input_dft": spec.xc_functional},
        "electrons": {"conv_thr": spec.elec_energy_tol_eV / Ry, "electron_maxstep": spec.max_scf_steps},
    }
    for section, entries in spec.extra_input.items():
        input_data.setdefault(section, {}).update(entries)
    grid = kpoint_grid(atoms, spec.kpoint_spacing_per_A)
    buf = io.StringIO()
    write_espresso_in(buf, atoms, input_data=input_data, pseudopotentials=dict(spec.pseudopotentials),
                      kpts=grid, koffset=(0, 0, 0))
    jobs = {"nmr": "&inputgipaw\n  job = 'nmr'\n  prefix = 'gipaw'\n  tmp_dir = './out/'\n"
                   f"  q_gipaw = {spec.q_gipaw}\n  spline_ps = .true.\n  use_nmr_macroscopic_shape = .true.\n/\n"}
    if spec.efg:
        jobs["efg"] = "&inputgipaw\n  job = 'efg'\n  prefix = 'gipaw'\n  tmp_dir = './out/'\n/\n"
    return buf.getvalue(), jobs


def _run_gipaw(spec: NMRShieldingSpec, atoms: Atoms, ctx: TaskContext) -> Atoms:
    work = Path(ctx.workdir)
    pw_in, jobs = gipaw_inputs(spec, atoms)
    env = launch_env(ctx)
    _write(work / "scf.pwi", pw_in)
    pw = shlex.split(ctx.launch) + shlex.split(spec.pw_executable) + ["-in", "scf.pwi"]
    _launch(pw, work, "pw", env, spec.timeout_s, required_binaries(ctx, spec.pw_executable))
    if espresso.scf_failed(work, "pw.out"):
        raise SCFNotConverged("qe-gipaw: pw.x SCF not converged")
    gipaw_exe = spec.executable or "gipaw.x"
    files = {}
    for job, text in jobs.items():
        _write(work / f"{job}.in", text)
        argv = shlex.split(ctx.launch) + shlex.split(gipaw_exe) + ["-in", f"{job}.in"]
        _launch(argv, work, f"gipaw-{job}", env, spec.timeout_s, required_binaries(ctx, gipaw_exe))
        files[job] = work / f"gipaw.{job}.magres"
        if not files[job].is_file():
            raise ReferenceFailed(f"gipaw.x (job={job}) wrote no {files[job].name}; gipaw.x ≥ 7 writes magres files")
    magres = read_magres_file(files["nmr"])
    if "efg" in files:
        efg = read_magres(files["efg"])
        magres.set_array("efg", efg.get_array("efg")[match_atoms(magres, efg)])
    return magres


# ---------------------------------------------------------------------------------------------- NWChem

NWCHEM_LABEL = "nwchem"
# NWChem's own report of a failed SCF (dft: "Calculation failed to converge"; scf: "SCF failed to converge")
NWCHEM_SCF_FAILED = re.compile(r"(calculation|scf) failed to converge", re.IGNORECASE)
_FLOAT = re.compile(r"-?\d+\.\d+(?:[EeDd][-+]?\d+)?")


def nwchem_input(spec: NMRShieldingSpec, atoms: Atoms, workdir: Path) -> str:
    """NWChem input of a GIAO shielding (+ EFG) property calculation, in the structure's own frame."""
    import io

    from ase.io.nwchem.nwwriter import write_nwchem_in

    if atoms.pbc.any():
        raise ValueError(f"nmrshielding field 'code': 'nwchem' computes molecules and clusters, but the structure "
                         f"is periodic (pbc={atoms.pbc.tolist()}); use 'castep' or 'qe-gipaw', or pbc=False")
    hf = spec.method.strip().lower() in ("hf", "scf")
    tol_Ha = spec.elec_energy_tol_eV / Ha
    properties = {"shielding": None, **({"efieldgrad": None} if spec.efg else {})}
    params = dict(
        label=NWCHEM_LABEL, perm=str(workdir), scratch=str(workdir), charge=spec.charge, basis=spec.basis,
        task="property", property=properties,
        # no centring, no reorientation, no symmetry: the tensors come back in the structure's frame, which
        # the MD average (Eq. 5.10) and the jump model compare between structures
        center=False, autoz=False, autosym=False,
    )
    if hf:
        scf = {"maxiter": spec.max_scf_steps, "nopen": spec.multiplicity - 1}
        if spec.multiplicity > 1:
            scf["uhf"] = None
        params.update(theory="scf", scf=scf)
    else:
        # `xc` through ASE, which spells PBE, LDA, RPBE … as NWChem wants them (PBE: xpbe96 cpbe96)
        params.update(theory="dft", xc=spec.method, dft={"mult": spec.multiplicity, "iterations": spec.max_scf_steps,
                                                          "convergence": {"energy": f"{tol_Ha:.1e}"}})
    buf = io.StringIO()
    write_nwchem_in(buf, atoms, echo=True, **params)
    return buf.getvalue() + "\n"


def parse_nwchem_shielding(text: str, n_atoms: int) -> np.ndarray:
    """Total GIAO shielding tensor (ppm) of each atom, (n_atoms, 3, 3), from an NWChem output."""
    start = text.find("Chemical Shielding Tensors (GIAO, in ppm)")
    if start < 0:
        raise ReferenceFailed("nwchem: no GIAO shielding section in the output")
    lines = text[start:].splitlines()
    sigma, atom = {}, None
    for i, line in enumerate(lines):
        m = re.match(r"\s*Atom:\s+(\d+)\s+\S+", line)
        if m:
            atom = int(m.group(1)) - 1
        elif line.strip() == "Total Shielding Tensor" and atom is not None:
            sigma[atom] = _matrix(lines[i + 1:i + 4], "shielding", atom)
    return _complete(sigma, n_atoms, "shielding")


def parse_nwchem_efg(text: str, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """(V (a.u.) of each atom in the magres convention V_ij = ∂²V/∂x_i∂x_j, the atoms' positions (Å) as NWChem
    printed them). NWChem prints the field gradient ∂E_i/∂x_j = −∂²V/∂x_i∂x_j (its nuclear term is
    −Z(3x² − r²)/r⁵, src/property/hnd_efgmap.F), so the sign is flipped here."""
    start = text.find("Electric field gradient\n")
    if start < 0:
        raise ReferenceFailed("nwchem: no electric field gradient section in the output")
    lines = text[start:].splitlines()
    efg, pos, atom = {}, {}, None
    for i, line in enumerate(lines):
        m = re.match(r"\s*(\d+)\s+([A-Za-z]{1,3})\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)\s*$", line)
        if m:
            atom = int(m.group(1)) - 1
            pos[atom] = np.array([float(x) for x in m.group(3, 4, 5)]) * Bohr
        elif line.startswith(" Electric field gradient in molecular frame") and atom is not None:
            v = [float(x) for x in _FLOAT.findall(lines[i + 3])]
            if len(v) != 6:
                raise ReferenceFailed(f"nwchem: unreadable EFG line of atom {atom + 1}: {lines[i + 3]!r}")
            xx, yy, zz, xy, xz, yz = v
            efg[atom] = -np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        if line.strip().startswith("Chemical Shielding Tensors"):
            break
    return _complete(efg, n_atoms, "EFG"), _complete(pos, n_atoms, "EFG position")


def _matrix(rows: list[str], what: str, atom: int) -> np.ndarray:
    values = [float(x) for row in rows for x in _FLOAT.findall(row)]
    if len(values) != 9:
        raise ReferenceFailed(f"nwchem: unreadable {what} tensor of atom {atom + 1}")
    return np.array(values).reshape(3, 3)


def _complete(per_atom: dict[int, np.ndarray], n_atoms: int, what: str) -> np.ndarray:
    missing = sorted(set(range(n_atoms)) - set(per_atom))
    if missing:
        raise ReferenceFailed(f"nwchem: no {what} for atoms {[i + 1 for i in missing][:10]} in the output")
    return np.array([per_atom[i] for i in range(n_atoms)])


def nwchem_error(text: str) -> str | None:
    """NWChem's own error message: the text between the dashed rules its errquit prints."""
    blocks = re.findall(r"^ -{72}\n(.*?)\n -{72}$", text, flags=re.MULTILINE | re.DOTALL)
    lines = [b.strip() for b in blocks if b.strip() and not b.strip().startswith("current input line")]
    return "\n".join(dict.fromkeys(lines)) or None


def _run_nwchem(spec: NMRShieldingSpec, atoms: Atoms, ctx: TaskContext) -> Atoms:
    work = Path(ctx.workdir)
    _write(work / f"{NWCHEM_LABEL}.nwi", nwchem_input(spec, atoms, work))
    executable = spec.executable or "nwchem"
    argv = shlex.split(ctx.launch) + shlex.split(executable) + [f"{NWCHEM_LABEL}.nwi"]
    out = work / f"{NWCHEM_LABEL}.out"
    try:
        run_command(argv, work, out.name, f"{NWCHEM_LABEL}.err", launch_env(ctx), spec.timeout_s,
                    required_binaries(ctx, executable))
    except subprocess.CalledProcessError as exc:
        text = out.read_text(errors="replace") if out.is_file() else ""
        if NWCHEM_SCF_FAILED.search(text):
            raise SCFNotConverged(f"nwchem: SCF not converged in {spec.max_scf_steps} steps ({out})") from exc
        raise classify_launch_failure("nwchem", exc.returncode, output_tails([out, work / f"{NWCHEM_LABEL}.err"]),
                                      nwchem_error(text)) from exc
    text = out.read_text(errors="replace")
    if NWCHEM_SCF_FAILED.search(text):
        raise SCFNotConverged(f"nwchem: SCF not converged in {spec.max_scf_steps} steps ({out})")
    return nwchem_magres(text, atoms, spec, work / f"{NWCHEM_LABEL}.magres")


def nwchem_magres(text: str, atoms: Atoms, spec: NMRShieldingSpec, path: Path) -> Atoms:
    """The tensors of an NWChem output written as a .magres and read back: the file is the task's record,
    and the same reader serves every code."""
    sigma = parse_nwchem_shielding(text, len(atoms))
    efg = None
    if spec.efg:
        efg, printed = parse_nwchem_efg(text, len(atoms))
        moved = np.abs(printed - atoms.positions).max()
        if moved > 1e-3:  # positions are printed to 1e-5 bohr
            raise ReferenceFailed(f"nwchem moved the atoms by {moved:.3g} Å (reoriented?): its tensors are in "
                                  f"another frame than the structure's")
    write_magres(path, atoms, sigma, efg, {"calc_code": "NWChem", "calc_xcfunctional": spec.method,
                                            "calc_basis": spec.basis})
    return read_magres_file(path)


# ---------------------------------------------------------------------------------------------- helpers


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _launch(argv, workdir: Path, name: str, env, timeout_s, binaries) -> None:
    try:
        run_command(argv, workdir, f"{name}.out", f"{name}.err", env, timeout_s, binaries)
    except subprocess.CalledProcessError as exc:
        raise classify_launch_failure(name, exc.returncode, exc.stderr or "") from exc
