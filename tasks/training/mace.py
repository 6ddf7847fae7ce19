"""A MACE committee through `mace_run_train`: one member per seed, each in its own directory."""
from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
from ase import Atoms

from reactforge.schemas.tasks import MACEModelSpec

from ..structures import plain_atoms
from ..train import TrainingFailed, fitter_executable, reference_energies, run_logged, stress_3x3, write_training_file


def mace_training_images(configs: list[Atoms]) -> list[Atoms]:
    """extxyz for mace_run_train: weights as MACE's config_energy_weight / config_forces_weight."""
    images = []
    for atoms in configs:
        a = plain_atoms(atoms, provenance=False)
        a.info["REF_energy"] = float(atoms.info["REF_energy"])
        a.arrays["REF_forces"] = np.asarray(atoms.arrays["REF_forces"], dtype=float)
        if "REF_stress" in atoms.info and a.pbc.all():
            s = np.asarray(atoms.info["REF_stress"], dtype=float)
            a.info["REF_stress"] = stress_3x3(s).reshape(-1) if s.shape == (6,) else s.reshape(-1)
        a.info["config_type"] = str(atoms.info.get("config_type", "Default"))
        w_e, w_f = float(atoms.info.get("energy_weight", 1.0)), float(atoms.info.get("force_weight", 1.0))
        a.info["config_energy_weight"] = w_e
        a.info["config_forces_weight"] = w_f
        a.info["config_stress_weight"] = w_e
        images.append(a)
    return images


def mace_command(spec: MACEModelSpec, seed: int, e0: dict[int, float], device: str, has_stress: bool,
                 configured: frozenset[int] | set[int] = frozenset()) -> list[str]:
    """mace_run_train arguments for one committee member, run inside its own directory. configured: the
    atomic numbers of the configurations fitted (default: those of the E0s)."""
    configured = configured or set(e0)
    e0_text = "{" + ", ".join(f"{z}: {float(e)!r}" for z, e in e0.items()) + "}"
    cmd = [
        fitter_executable("mace_run_train"),
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
        cmd += [f"--foundation_model={path.resolve()}"]
        if spec.replay_file is None:
            cmd += ["--multiheads_finetuning=False"]
        else:  # mace's replay: a second head trained on the foundation's data (its own lr and EMA defaults)
            replay = Path(spec.replay_file)
            if not replay.is_file():
                raise ValueError(f"model.replay_file: {replay} is not a file")
            cmd += ["--multiheads_finetuning=True", f"--pt_train_file={replay.resolve()}"]
    if spec.foundation_model is None and set(e0) - {int(z) for z in configured}:
        # an element with an E0 but in no configuration (a dopant's free atom): mace takes its element table
        # from the configurations, so it is named here, or the model could not evaluate that element at all
        cmd += [f"--atomic_numbers={sorted(int(z) for z in e0)}"]
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


def fit(spec: MACEModelSpec, configs, isolated, workdir: Path, seed: int, device: str, threads: int):
    seeds = spec.seeds if spec.seeds is not None else [seed + k for k in range(spec.committee_size)]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"model.seeds must differ between committee members, got {seeds}")
    e0 = reference_energies(configs, isolated)
    if spec.foundation_model is not None:
        # fine-tuning keeps the foundation's E0s: a least-squares fit of a few labels that share one
        # composition is ill-posed, and mace's replay head would otherwise take it
        if not Path(spec.foundation_model).is_file():
            raise ValueError(f"model.foundation_model: {spec.foundation_model} is not a file (fine-tuning takes a local model file)")
        found = model_e0s(Path(spec.foundation_model))
        missing = sorted(set(e0) - set(found))
        if missing:
            raise ValueError(f"model.foundation_model: {Path(spec.foundation_model).name} has no E0 for Z = {missing}")
        e0 = {z: found[z] for z in e0}
    has_stress = any("REF_stress" in a.info and a.pbc.all() for a in configs)
    configured = {int(z) for a in configs for z in a.numbers}
    write_training_file(workdir / "train.xyz", mace_training_images(configs))
    jobs = []
    for s in seeds:
        member = workdir / f"member_{s}"
        member.mkdir(exist_ok=True)
        for old in member.glob("*.model"):  # a retried task must not pick up a model of the failed try
            old.unlink()
        jobs.append((mace_command(spec, s, e0, device, has_stress, configured), member, member / "mace_run_train.log"))
    # members train side by side (they share the device; the cores are split between them)
    per_member = str(max(1, threads // len(seeds)))
    run_logged(jobs, {"OMP_NUM_THREADS": per_member, "MKL_NUM_THREADS": per_member})
    paths = []
    for s, (_, member, _) in zip(seeds, jobs):
        # the plain torch.save model (MACECalculator loads it on any device); stage two's file if it ran
        candidates = [member / f"member_{s}_stagetwo.model", member / f"member_{s}.model"]
        model = next((p for p in candidates if p.exists()), None)
        if model is None:
            raise TrainingFailed(f"mace_run_train finished without writing {candidates[-1]}")
        paths.append(model)
    if spec.foundation_model is not None:
        # mace-torch 0.3.16 copies every same-shaped tensor of the foundation into the fine-tuned model, its
        # E0s included, whatever --E0s says: record the E0s the model has, read back from its file
        e0 = model_e0s(paths[0])
    return paths, list(paths), e0, [shlex.join(cmd) for cmd, _, _ in jobs]


def model_e0s(path: Path) -> dict[int, float]:
    """Per-element E0 (eV) stored in a MACE model file, of the head MACECalculator uses ("Default"; a
    replay fine-tune also has mace's "pt_head", first)."""
    import torch

    model = torch.load(path, map_location="cpu", weights_only=False)
    heads = list(getattr(model, "heads", None) or ["Default"])
    energies = model.atomic_energies_fn.atomic_energies.detach().cpu().numpy()
    energies = energies.reshape(-1, len(model.atomic_numbers))
    energies = energies[heads.index("Default") if "Default" in heads and len(energies) == len(heads) else 0]
    return {int(z): float(e) for z, e in zip(model.atomic_numbers.tolist(), energies)}
