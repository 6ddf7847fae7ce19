"""ASE calculator of a trained MFN: energy, forces (autograd, energy-conserving) and atomic energies."""
from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from . import data as mfn_data
from .model import load


class MFNCalculator(Calculator):
    """MFNCalculator(path, device="cpu"): results energy, free_energy, forces, energies/node_energy."""

    implemented_properties = ["energy", "free_energy", "forces", "energies", "node_energy"]

    def __init__(self, path: str, device: str = "cpu", default_dtype: str = "float64", **kwargs):
        super().__init__(**kwargs)
        from mace.tools.utils import AtomicNumberTable

        self.device = device
        self.dtype = torch.float64 if default_dtype == "float64" else torch.float32
        self.model = load(path, device=device, dtype=self.dtype)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.z_table = AtomicNumberTable([int(z) for z in self.model.atomic_numbers])
        self.r_max = float(self.model.r_max)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms.copy()
        prev = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            (graph,) = mfn_data.graphs([a], self.z_table, self.r_max)
            batch = next(iter(mfn_data.loader([graph], 1))).to(self.device)
            out = self.model(batch.to_dict(), training=False, compute_force=True)
        finally:
            torch.set_default_dtype(prev)
        energy = float(out["energy"].detach().cpu()[0])
        node = out["node_energy"].detach().cpu().numpy().astype(float)
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"].detach().cpu().numpy().astype(float),
            "energies": node,
            "node_energy": np.array(node),
        }
