"""A matrix function network committee (models/mfn), trained in process."""
from __future__ import annotations

from pathlib import Path

from ase import Atoms

from ..train import reference_energies


def fit(spec, configs: list[Atoms], isolated, workdir: Path, seed: int, device: str, threads: int):
    """Every 10th configuration validates, the rest train; one model per seed."""
    from reactforge.models.mfn.train import train_mfn

    seeds = spec.seeds if spec.seeds is not None else [seed + k for k in range(spec.committee_size)]
    valid = configs[::10] if len(configs) >= 10 else []
    train = [a for i, a in enumerate(configs) if len(configs) < 10 or i % 10]
    paths = [Path(train_mfn(spec, train, valid, workdir, device=device, seed=s)) for s in seeds]
    e0 = reference_energies(configs, isolated, use_isolated=False)
    return paths, list(paths), e0, [f"reactforge.models.mfn.train.train_mfn(seed={s})" for s in seeds]
