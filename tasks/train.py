"""Train task: fit a GAP (quippy `gap_fit`) or a MACE committee (`mace_run_train`) to labelled structures.

Input structures carry their labels as info["REF_energy"] (eV), arrays["REF_forces"] (eV/Å), optionally
info["REF_stress"] (Voigt 6, eV/Å³), and per-configuration weights info["energy_weight"] /
info["force_weight"] (default 1; the workflows give dimers 1/5). Single-atom configurations with
info["config_type"] = "isolated_atom" are not fitted: they give the per-element reference energies E0.
Elements without one get E0 from a least-squares fit of the total energies on composition.

Both fitters run as the real executables from the interpreter's bin directory; their output goes to a
log in the task's workdir and a non-zero exit raises `TrainingFailed` with the log's tail.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.io import write

from reactforge.schemas.results import TrainResult
from reactforge.schemas.tasks import GAPModelSpec, MACEModelSpec, ModelRef, TrainSpec

from .context import TaskContext
from .errors import TaskError, TransientError

ISOLATED = "isolated_atom"


class TrainingFailed(TaskError):
    """gap_fit / mace_run_train exited with an error (the message carries the log's tail)."""

    failure_class = "error"


# ----------------------------------------------------------------------------------------------
# Training set
# ----------------------------------------------------------------------------------------------


def _weight(atoms: Atoms, key: str, i: int) -> float:
    w = float(atoms.info.get(key, 1.0))
    if not np.isfinite(w) or w <= 0:
        raise ValueError(f"structure {i}: info[{key!r}] = {w} must be a positive number")
    return w


def split_training_set(structures: list[Atoms]) -> tuple[list[Atoms], dict[int, float]]:
    """Validate labels; return (configurations to fit, {Z: isolated-atom energy in eV})."""
    configs, isolated = [], {}
    for i, atoms in enumerate(structures):
        if "REF_energy" not in atoms.info:
            raise ValueError(f"structure {i} ({atoms.get_chemical_formula()}): no info['REF_energy'] label")
        energy = float(atoms.info["REF_energy"])
        if not np.isfinite(energy):
            raise ValueError(f"structure {i}: REF_energy is not finite")
        if atoms.info.get("config_type") == ISOLATED:
            if len(atoms) != 1:
                raise ValueError(f"structure {i}: config_type={ISOLATED} needs exactly one atom, has {len(atoms)}")
            isolated[int(atoms.numbers[0])] = energy
            continue
        forces = atoms.arrays.get("REF_forces")
        if forces is None or np.shape(forces) != (len(atoms), 3):
            raise ValueError(f"structure {i}: arrays['REF_forces'] missing or not of shape ({len(atoms)}, 3)")
        if not np.all(np.isfinite(forces)):
            raise ValueError(f"structure {i}: REF_forces not finite")
        if "REF_stress" in atoms.info and np.shape(atoms.info["REF_stress"]) not in ((6,), (3, 3)):
            raise ValueError(f"structure {i}: REF_stress must be Voigt 6 or 3x3")
        _weight(atoms, "energy_weight", i)
        _weight(atoms, "force_weight", i)
        configs.append(atoms)
    if not configs:
        raise ValueError("the training set has no labelled configurations besides isolated atoms")
    return configs, isolated


def reference_energies(configs: list[Atoms], isolated: dict[int, float], use_isolated: bool = True) -> dict[int, float]:
    """E0 per element: isolated-atom energies where given, else least squares of E_total on composition
    (what `--E0s=average` does in MACE; computed here so every committee member uses the same E0s)."""
    species = sorted({int(z) for a in configs for z in a.numbers} | set(isolated))
    known = {z: e for z, e in isolated.items() if use_isolated}
    missing = [z for z in species if z not in known]
    e0 = dict(known)
    if missing:
        counts = np.array([[np.sum(a.numbers == z) for z in missing] for a in configs], dtype=float)
        rest = np.array(
            [a.info["REF_energy"] - sum(known.get(int(z), 0.0) for z in a.numbers) for a in configs], dtype=float
        )
        fit, *_ = np.linalg.lstsq(counts, rest, rcond=None)
        e0.update({z: float(v) for z, v in zip(missing, fit)})
    return {z: e0[z] for z in species}


def _clean(atoms: Atoms) -> Atoms:
    """Only positions, cell and labels: no calculator, constraints or stray arrays reach the fitter."""
    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def _write_atomic(path: Path, images: list[Atoms]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp, images, format="extxyz")
    os.replace(tmp, path)


def _stress_3x3(stress) -> np.ndarray:
    s = np.asarray(stress, dtype=float)
    if s.shape == (3, 3):
        return s
    xx, yy, zz, yz, xz, xy = s
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def _executable(name: str) -> str:
    """The console script next to the interpreter (the venv's bin, whatever PATH says), else on PATH."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise TrainingFailed(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def _run_logged(cmd: list[str], cwd: Path, log: Path, env: dict[str, str]) -> None:
    _run_all_logged([(cmd, cwd, log)], env)


def _run_all_logged(jobs: list[tuple[list[str], Path, Path]], env: dict[str, str]) -> None:
    """Run (command, cwd, log) jobs concurrently; all finish before the first failure is raised."""
    procs = []
    for cmd, cwd, log in jobs:
        with open(log, "w") as fh:
            procs.append(subprocess.Popen(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **env}))
    codes = [p.wait() for p in procs]
    for (cmd, _, log), code in zip(jobs, codes):
        if code != 0:
            lines = log.read_text(errors="replace").splitlines(keepends=True)
            flagged = [ln for ln in lines[:-25] if any(w in ln for w in ("ABORT", "ERROR", "Error"))]
            tail = "".join(flagged[-5:] + lines[-25:])
            message = f"{Path(cmd[0]).name} exited with {code} (log {log}):\n{tail}"
            if code < 0:  # killed by a signal (OOM killer, walltime, lost node): worth a retry
                raise TransientError(message)
            raise TrainingFailed(message)


def files_sha256(paths: list[Path]) -> str:
    """Identity of a model: hash over the names and contents of all its files, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# GAP
# ----------------------------------------------------------------------------------------------


def _braced(values) -> str:
    # Arrays inside gap={...} need one extra level of braces on the command line.
    return "{{" + " ".join(str(v) for v in values) + "}}"


def soap_turbo_terms(spec: GAPModelSpec, species_Z: list[int]) -> list[str]:
    """One soap_turbo descriptor per SOAP term and central species (thesis appendix A: add_species=F,
    the per-species terms written out, `central_index` 1-based into species_Z)."""
    n = len(species_Z)
    terms = []
    for soap in spec.soap:
        for centre in range(1, n + 1):
            terms.append(
                " ".join(
                    [
                        "soap_turbo",
                        f"l_max={soap.l_max}",
                        f"alpha_max={_braced([soap.alpha_max] * n)}",
                        f"atom_sigma_r={_braced([soap.atom_sigma_r_A] * n)}",
                        f"atom_sigma_t={_braced([soap.atom_sigma_t_A] * n)}",
                        f"atom_sigma_r_scaling={_braced([0.0] * n)}",
                        f"atom_sigma_t_scaling={_braced([0.0] * n)}",
                        f"amplitude_scaling={_braced([1.0] * n)}",
                        f"central_weight={_braced([1.0] * n)}",
                        f"rcut_hard={soap.rcut_hard_A}",
                        f"rcut_soft={soap.rcut_soft_A}",
                        f"basis={soap.basis}",
                        "scaling_mode=polynomial",
                        "radial_enhancement=1",
                        f"n_species={n}",
                        f"species_Z={_braced(species_Z)}",
                        f"central_index={centre}",
                        "add_species=F",
                        "covariance_type=dot_product",
                        f"zeta={soap.zeta}",
                        f"delta={soap.delta}",
                        f"n_sparse={soap.n_sparse}",
                        f"sparse_method={soap.sparse_method}",
                    ]
                )
            )
    return terms


def pairs_within(configs: list[Atoms], cutoff_A: float) -> set[tuple[int, int]]:
    """Species pairs (Z1 <= Z2) that occur closer than the cut-off somewhere in the data."""
    from ase.neighborlist import neighbor_list

    pairs: set[tuple[int, int]] = set()
    for atoms in configs:
        a = atoms.copy()
        if a.cell.rank < 3:
            a.pbc = False
        i, j = neighbor_list("ij", a, cutoff_A)
        z = a.numbers
        pairs |= {(min(p, q), max(p, q)) for p, q in zip(z[i].tolist(), z[j].tolist())}
    return pairs


def distance_2b_terms(spec: GAPModelSpec, species_Z: list[int],
                      present: set[tuple[int, int]] | None = None) -> list[str]:
    """One pair term per species pair; with `present`, only pairs the data sample (gap_fit stops on a
    term without data points, e.g. H-H before any adsorbate was labelled)."""
    if spec.distance_2b is None:
        return []
    d = spec.distance_2b
    terms = []
    for i, z1 in enumerate(species_Z):
        for z2 in species_Z[i:]:
            if present is not None and (z1, z2) not in present:
                continue
            terms.append(
                f"distance_2b Z1={z1} Z2={z2} cutoff={d.cutoff_A} "
                f"cutoff_transition_width={d.cutoff_transition_width_A} "
                f"covariance_type=ard_se theta_uniform={d.theta_uniform_A} delta={d.delta} "
                f"n_sparse={d.n_sparse} sparse_method=uniform add_species=F"
            )
    return terms


def gap_fit_command(
    spec: GAPModelSpec, species_Z: list[int], e0: dict[int, float], at_file: str, gp_file: str, seed: int = 0,
    pairs: set[tuple[int, int]] | None = None,
) -> list[str]:
    """The gap_fit argument list (first element: the executable)."""
    terms = distance_2b_terms(spec, species_Z, pairs) + soap_turbo_terms(spec, species_Z)
    e0_text = ":".join(f"{chemical_symbols[z]}:{float(e0[z])!r}" for z in species_Z)
    return [
        _executable("gap_fit"),
        f"at_file={at_file}",
        "gap={" + " : ".join(terms) + "}",
        f"default_sigma={{{spec.sigma_energy_eV} {spec.sigma_force_eV_per_A} {spec.sigma_virial_eV} 0.0}}",
        f"e0={{{e0_text}}}",
        "energy_parameter_name=REF_energy",
        "force_parameter_name=REF_forces",
        "virial_parameter_name=REF_virial",
        "sigma_parameter_name=sigma",
        "config_type_parameter_name=config_type",
        f"sparse_jitter={spec.sparse_jitter}",
        f"rnd_seed={seed + 1}",  # gap_fit's generator rejects 0
        "do_copy_at_file=F",
        f"gp_file={gp_file}",
        # sparse points in their own files: quippy parses them 6x faster than the same numbers inside
        # the xml (0.7 s against 4.2 s for 3 x 200 SOAP points), and every MLFF task loads the model
        "sparse_separate_file=T",
    ]


def gap_training_images(configs: list[Atoms], spec: GAPModelSpec) -> list[Atoms]:
    """extxyz images for gap_fit. A weight w becomes a per-configuration sigma = default/w: gap_fit
    reads info energy_sigma/force_sigma/virial_sigma as absolute values (not per atom, measured: a
    per-config energy_sigma equal to default·sqrt(N) reproduces the default fit), so those are scaled
    by sqrt(N) like the per-atom default_sigma."""
    cutoff = max([soap.rcut_hard_A for soap in spec.soap] + [spec.distance_2b.cutoff_A if spec.distance_2b else 0.0])
    images = []
    for atoms in configs:
        a = _clean(atoms)
        if not a.pbc.any() and a.cell.rank < 3:
            # gap_fit mis-fits configurations without a cell (measured: a cell-less dimer in the set
            # gave 0.87 eV/atom training error): box it, wider than the cut-off on every side
            a.cell = np.ptp(a.positions, axis=0) + 2 * cutoff + 1.0
            a.center()
        a.info["REF_energy"] = float(atoms.info["REF_energy"])
        a.arrays["REF_forces"] = np.asarray(atoms.arrays["REF_forces"], dtype=float)
        if "config_type" in atoms.info:
            a.info["config_type"] = str(atoms.info["config_type"])
        if "REF_stress" in atoms.info and a.pbc.all():
            a.info["REF_virial"] = (-_stress_3x3(atoms.info["REF_stress"]) * a.get_volume()).reshape(-1)
        w_e, w_f = float(atoms.info.get("energy_weight", 1.0)), float(atoms.info.get("force_weight", 1.0))
        if w_e != 1.0 or w_f != 1.0:
            root_n = np.sqrt(len(a))
            a.info["energy_sigma"] = spec.sigma_energy_eV * root_n / w_e
            a.info["virial_sigma"] = spec.sigma_virial_eV * root_n / w_e
            a.info["force_sigma"] = spec.sigma_force_eV_per_A / w_f
        images.append(a)
    return images


def gap_fit_invocation(cmd: list[str], workdir: Path, name: str = "gap_fit.config") -> list[str]:
    """Write the arguments to a config file (one per line) and return `gap_fit config_file=...`.

    QUIP reads each command-line argument into a fixed-length string: the gap={...} argument of the
    thesis's double SOAP for three or more species does not fit ("Problem reading command argument 2").
    The config file is read line by line into fixed-length chunks too, so the gap={...} argument is
    broken into one descriptor term per line (measured: a 6000-character line is cut mid-value).
    """
    lines = [arg.replace(" : ", " :\n ") if arg.startswith("gap={") else arg for arg in cmd[1:]]
    tmp = Path(workdir) / (name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, Path(workdir) / name)
    return [cmd[0], f"config_file={name}"]


def fit_gap(spec: GAPModelSpec, configs, isolated, workdir: Path, seed: int, threads: int):
    species = sorted({int(z) for a in configs for z in a.numbers} | set(isolated) | set(spec.species_Z or []))
    e0 = reference_energies(configs, isolated, use_isolated=spec.e0_method == "isolated")
    e0 = {z: e0.get(z, 0.0) for z in species}
    _write_atomic(workdir / "train.xyz", gap_training_images(configs, spec))
    pairs = pairs_within(configs, spec.distance_2b.cutoff_A) if spec.distance_2b is not None else None
    cmd = gap_fit_invocation(gap_fit_command(spec, species, e0, "train.xyz", "gap.xml", seed, pairs), workdir)
    (workdir / "gap_fit.cmd").write_text(shlex.join(cmd) + "\n")
    for old in workdir.glob("gap.xml*"):  # a retried task must not mix sparseX files of two fits
        old.unlink()
    _run_logged(cmd, workdir, workdir / "gap_fit.log", {"OMP_NUM_THREADS": str(max(1, threads))})
    xml = workdir / "gap.xml"
    if not xml.exists():
        raise TrainingFailed(f"gap_fit finished without writing {xml}")
    # the model is the xml plus the sparse-point files it names (tasks.mlff resolves them beside it)
    files = [xml] + sorted(workdir.glob("gap.xml.sparseX.*"))
    return files, files, e0, [shlex.join(cmd)]


# ----------------------------------------------------------------------------------------------
# MACE committee
# ----------------------------------------------------------------------------------------------


def mace_training_images(configs: list[Atoms]) -> list[Atoms]:
    """extxyz for mace_run_train: weights as MACE's config_energy_weight / config_forces_weight."""
    images = []
    for atoms in configs:
        a = _clean(atoms)
        a.info["REF_energy"] = float(atoms.info["REF_energy"])
        a.arrays["REF_forces"] = np.asarray(atoms.arrays["REF_forces"], dtype=float)
        if "REF_stress" in atoms.info and a.pbc.all():
            s = np.asarray(atoms.info["REF_stress"], dtype=float)
            a.info["REF_stress"] = _stress_3x3(s).reshape(-1) if s.shape == (6,) else s.reshape(-1)
        a.info["config_type"] = str(atoms.info.get("config_type", "Default"))
        w_e, w_f = float(atoms.info.get("energy_weight", 1.0)), float(atoms.info.get("force_weight", 1.0))
        a.info["config_energy_weight"] = w_e
        a.info["config_forces_weight"] = w_f
        a.info["config_stress_weight"] = w_e
        images.append(a)
    return images


def mace_command(spec: MACEModelSpec, seed: int, e0: dict[int, float], device: str, has_stress: bool) -> list[str]:
    """mace_run_train arguments for one committee member, run inside its own directory."""
    e0_text = "{" + ", ".join(f"{z}: {float(e)!r}" for z, e in e0.items()) + "}"
    cmd = [
        _executable("mace_run_train"),
        f"--name=member_{seed}",
        f"--seed={seed}",
        "--train_file=../train.xyz",
        f"--valid_fraction={spec.valid_fraction}",
        "--energy_key=REF_energy",
        "--forces_key=REF_forces",
        f"--E0s={e0_text}",
        "--model=MACE",
        f"--max_num_epochs={spec.max_num_epochs}",
        f"--patience={spec.patience}",
        f"--batch_size={spec.batch_size}",
        f"--valid_batch_size={spec.batch_size}",
        f"--lr={spec.lr}",
        f"--weight_decay={spec.weight_decay}",
        f"--energy_weight={spec.energy_weight}",
        f"--forces_weight={spec.forces_weight}",
        f"--default_dtype={spec.default_dtype}",
        f"--device={device}",
        "--scaling=rms_forces_scaling",
        "--save_cpu",
    ]
    if spec.foundation_model is None:
        cmd += [
            f"--r_max={spec.r_max_A}",
            f"--num_interactions={spec.num_interactions}",
            f"--hidden_irreps={spec.hidden_irreps}",
            f"--max_L={spec.max_L}",
            f"--max_ell={spec.max_ell}",
            f"--correlation={spec.correlation}",
        ]
    else:  # fine-tuning (thesis ch. 4): the architecture comes from the model file
        path = Path(spec.foundation_model)
        if not path.is_file():
            raise ValueError(f"model.foundation_model: {path} is not a file (fine-tuning takes a local model file)")
        cmd += [f"--foundation_model={path.resolve()}", "--multiheads_finetuning=False"]
    if has_stress:
        cmd += ["--stress_key=REF_stress", "--loss=stress", f"--stress_weight={spec.stress_weight}"]
    if spec.ema_decay is not None:
        cmd += ["--ema", f"--ema_decay={spec.ema_decay}"]
    if spec.stage_two_start_epoch is not None and spec.stage_two_start_epoch < spec.max_num_epochs:
        cmd += [
            "--stage_two",
            f"--start_stage_two={spec.stage_two_start_epoch}",
            f"--stage_two_energy_weight={spec.stage_two_energy_weight}",
            f"--stage_two_forces_weight={spec.stage_two_forces_weight}",
            f"--stage_two_lr={spec.stage_two_lr}",
        ]
    return cmd


def fit_mace(spec: MACEModelSpec, configs, isolated, workdir: Path, seed: int, device: str, threads: int):
    seeds = spec.seeds if spec.seeds is not None else [seed + k for k in range(spec.committee_size)]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"model.seeds must differ between committee members, got {seeds}")
    e0 = reference_energies(configs, isolated)
    has_stress = any("REF_stress" in a.info and a.pbc.all() for a in configs)
    _write_atomic(workdir / "train.xyz", mace_training_images(configs))
    jobs = []
    for s in seeds:
        member = workdir / f"member_{s}"
        member.mkdir(exist_ok=True)
        for old in member.glob("*.model"):  # a retried task must not pick up a model of the failed try
            old.unlink()
        jobs.append((mace_command(spec, s, e0, device, has_stress), member, member / "mace_run_train.log"))
    # members train side by side (they share the device; the cores are split between them)
    per_member = str(max(1, threads // len(seeds)))
    _run_all_logged(jobs, {"OMP_NUM_THREADS": per_member, "MKL_NUM_THREADS": per_member})
    paths = []
    for s, (_, member, _) in zip(seeds, jobs):
        # the plain torch.save model (MACECalculator loads it on any device); stage two's file if it ran
        candidates = [member / f"member_{s}_stagetwo.model", member / f"member_{s}.model"]
        model = next((p for p in candidates if p.exists()), None)
        if model is None:
            raise TrainingFailed(f"mace_run_train finished without writing {candidates[-1]}")
        paths.append(model)
    return paths, list(paths), e0, [shlex.join(cmd) for cmd, _, _ in jobs]


# ----------------------------------------------------------------------------------------------
# Task entry point
# ----------------------------------------------------------------------------------------------


def training_rmse(ref: ModelRef, configs: list[Atoms], device: str) -> tuple[float, float]:
    """(energy RMSE meV/atom, force-component RMSE meV/Å) of the fitted model on its training set."""
    from .mlff import load_mlff

    calc = load_mlff(ref, device=device)
    de, df = [], []
    for atoms in configs:
        a = _clean(atoms)
        a.calc = calc
        de.append((a.get_potential_energy() - atoms.info["REF_energy"]) / len(a))
        df.append((a.get_forces() - atoms.arrays["REF_forces"]).reshape(-1))
    return 1e3 * float(np.sqrt(np.mean(np.square(de)))), 1e3 * float(np.sqrt(np.mean(np.square(np.concatenate(df)))))


def run(spec: TrainSpec, structures: list[Atoms], ctx: TaskContext) -> TrainResult:
    start = time.perf_counter()
    workdir = Path(ctx.workdir).resolve()
    configs, isolated = split_training_set(structures)
    device = ctx.device if spec.device == "auto" else spec.device
    model = spec.model
    if model.model == "gap":
        paths, files, e0, commands = fit_gap(model, configs, isolated, workdir, spec.seed, ctx.threads)
        uncertainty = "energy"
    elif model.model == "mfn":
        paths, files, e0, commands = _train_mfn(model, configs, isolated, workdir, spec.seed, device)
        uncertainty = model.uncertainty
    else:
        paths, files, e0, commands = fit_mace(model, configs, isolated, workdir, spec.seed, device, ctx.threads)
        uncertainty = model.uncertainty
    ref = ModelRef(
        model=model.model, paths=[str(p) for p in paths], sha256=files_sha256(files), uncertainty=uncertainty
    )
    rmse_e, rmse_f = training_rmse(ref, configs, device)
    return TrainResult(
        model=ref,
        n_configs=len(configs),
        train_rmse_energy_meV_per_atom=rmse_e,
        train_rmse_forces_meV_per_A=rmse_f,
        wall_s=time.perf_counter() - start,
        e0_eV={chemical_symbols[z]: e for z, e in e0.items()},
        commands=commands,
    )


def _train_mfn(spec, configs: list[Atoms], isolated, workdir: Path, seed: int, device: str):
    """MFN committee (models/mfn): every 10th configuration validates, the rest train; one model per seed."""
    from reactforge.models.mfn.train import train_mfn

    seeds = spec.seeds if spec.seeds is not None else [seed + k for k in range(spec.committee_size)]
    valid = configs[::10] if len(configs) >= 10 else []
    train = [a for i, a in enumerate(configs) if len(configs) < 10 or i % 10]
    paths = [Path(train_mfn(spec, train, valid, workdir, device=device, seed=s)) for s in seeds]
    e0 = reference_energies(configs, isolated, use_isolated=False)
    return paths, list(paths), e0, [f"reactforge.models.mfn.train.train_mfn(seed={s})" for s in seeds]
