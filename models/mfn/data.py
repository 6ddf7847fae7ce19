"""ase.Atoms -> mace AtomicData graphs and batches (mace-torch's own neighbour lists and collation)."""
from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from mace.data import AtomicData
from mace.data.utils import KeySpecification, config_from_atoms
from mace.tools.torch_geometric.dataloader import DataLoader
from mace.tools.utils import AtomicNumberTable


def graphs(
    atoms_list: list[Atoms], z_table: AtomicNumberTable, r_max_A: float,
    energy_key: str = "REF_energy", forces_key: str = "REF_forces",
) -> list[AtomicData]:
    """Graphs with cut-off r_max_A; per-structure loss weights from info energy_weight / force_weight."""
    keys = KeySpecification(info_keys={"energy": energy_key}, arrays_keys={"forces": forces_key})
    out = []
    for a in atoms_list:
        unknown = set(a.numbers.tolist()) - set(z_table.zs)
        if unknown:
            raise ValueError(f"elements {sorted(unknown)} are not in the model's table {z_table.zs}")
        if "energy_weight" in a.info or "force_weight" in a.info:
            a = a.copy()  # mace reads config_<property>_weight
            a.info["config_energy_weight"] = float(a.info.get("energy_weight", 1.0))
            a.info["config_forces_weight"] = float(a.info.get("force_weight", 1.0))
        out.append(AtomicData.from_config(config_from_atoms(a, keys), z_table=z_table, cutoff=r_max_A))
    return out


def loader(data: list[AtomicData], batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, drop_last=False, generator=gen)


def average_e0s(atoms_list: list[Atoms], zs: list[int], energy_key: str = "REF_energy") -> list[float]:
    """Least-squares E0 per element from total energies (mace's `E0s=average`)."""
    A = np.array([[np.count_nonzero(a.numbers == z) for z in zs] for a in atoms_list], dtype=float)
    b = np.array([a.info[energy_key] for a in atoms_list])
    return np.linalg.lstsq(A, b, rcond=None)[0].tolist()
