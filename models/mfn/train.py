"""Energy + force training of an MFN (or any mace-style model with the same forward signature).

The loss is mace-torch's WeightedEnergyForcesLoss (per-atom energy MSE × E_weight + force MSE ×
F_weight, thesis Table 6.2); Adam with AMSGrad, plateau learning-rate decay, and the model of the
lowest validation loss is kept (thesis §6.7.3: "the saved model corresponds to the epoch that exhibits
the minimum loss").
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from . import data as mfn_data
from .model import MFN, MFNConfig, save

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def evaluate(model, data_loader, device: str) -> dict:
    """RMSE of energy per atom (meV/atom) and force components (meV/Å), and the predictions."""
    model.eval()
    de, df, energies, refs = [], [], [], []
    for batch in data_loader:
        batch = batch.to(device)
        out = model(batch.to_dict(), training=False, compute_force=True)
        n = (batch.ptr[1:] - batch.ptr[:-1]).to(out["energy"].dtype)
        de.append(((out["energy"] - batch.energy) / n).detach().cpu())
        df.append((out["forces"] - batch.forces).detach().cpu().flatten())
        energies.append(out["energy"].detach().cpu())
        refs.append(batch.energy.detach().cpu())
    de, df = torch.cat(de), torch.cat(df)
    return {
        "energy_meV_per_atom": float(1000 * de.pow(2).mean().sqrt()),
        "forces_meV_per_A": float(1000 * df.pow(2).mean().sqrt()),
        "pred_energy_eV": torch.cat(energies).tolist(),
        "ref_energy_eV": torch.cat(refs).tolist(),
    }


def fit(
    model: torch.nn.Module,
    train_data: list,
    valid_data: list,
    *,
    epochs: int,
    lr: float,
    energy_weight: float,
    forces_weight: float,
    batch_size: int,
    device: str = "cpu",
    seed: int = 0,
    max_time_s: float | None = None,
    eval_every: int = 1,
    patience: int = 50,
    schedule: str = "plateau",
) -> dict:
    """Train in place; loads the best-validation weights at the end. Returns the loss history.

    schedule 'plateau': lr × 0.8 after `patience` evaluations without improvement; 'cosine': lr
    follows a half cosine to lr/100 over max_time_s (or epochs), which gets more out of a short fixed
    budget than waiting for plateaus.
    """
    if schedule not in ("plateau", "cosine"):
        raise ValueError(f"schedule must be 'plateau' or 'cosine', got {schedule!r}")
    from mace.modules.loss import WeightedEnergyForcesLoss

    torch.manual_seed(seed)
    model.to(device)
    train_loader = mfn_data.loader(train_data, batch_size, shuffle=True, seed=seed)
    valid_loader = mfn_data.loader(valid_data or train_data, batch_size)
    loss_fn = WeightedEnergyForcesLoss(energy_weight, forces_weight).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, amsgrad=True)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.8, patience=patience)
    best, best_state, history = float("inf"), copy.deepcopy(model.state_dict()), []
    # an energy-only loss needs no forces: one backward pass instead of a double one
    with_forces = forces_weight > 0

    def predict(batch, training):
        out = model(batch.to_dict(), training=training, compute_force=with_forces)
        return out if with_forces else {**out, "forces": batch.forces}  # zero force residual, weight 0

    start = time.time()
    for epoch in range(epochs):
        if schedule == "cosine":
            done = (time.time() - start) / max_time_s if max_time_s else epoch / max(epochs, 1)
            for group in optimiser.param_groups:
                group["lr"] = lr * (0.01 + 0.99 * 0.5 * (1.0 + np.cos(np.pi * min(done, 1.0))))
        model.train()
        total = 0.0
        for batch in train_loader:
            batch = batch.to(device)
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(batch, predict(batch, True))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimiser.step()
            total += float(loss.detach()) * batch.num_graphs
        train_loss = total / len(train_data)
        record = {"epoch": epoch, "train_loss": train_loss}
        last = epoch == epochs - 1 or (max_time_s is not None and time.time() - start > max_time_s)
        if epoch % eval_every == 0 or last:
            model.eval()
            vl, count = 0.0, 0
            for batch in valid_loader:
                batch = batch.to(device)
                vl += float(loss_fn(batch, predict(batch, False)).detach()) * batch.num_graphs
                count += batch.num_graphs
            record["valid_loss"] = vl / count
            if schedule == "plateau":
                scheduler.step(record["valid_loss"])
            if record["valid_loss"] < best:
                best, best_state = record["valid_loss"], copy.deepcopy(model.state_dict())
            log.info("epoch %d train %.5g valid %.5g", epoch, train_loss, record["valid_loss"])
        history.append(record)
        if last:
            break
    model.load_state_dict(best_state)
    return {"history": history, "best_valid_loss": best, "wall_s": time.time() - start}


def data_statistics(train_atoms: list[Atoms], zs: list[int], energy_key="REF_energy", forces_key="REF_forces"):
    """E0s (least squares), RMS force (the readout scale), mean neighbours are set by the caller."""
    e0s = mfn_data.average_e0s(train_atoms, zs, energy_key)
    forces = np.concatenate([a.arrays[forces_key].ravel() for a in train_atoms])
    rms = float(np.sqrt(np.mean(forces**2))) if forces.size else 1.0
    return e0s, max(rms, 1e-3)


def mfn_config_from_spec(spec, zs: list[int], e0s: list[float], scale: float, avg_num_neighbors: float) -> MFNConfig:
    return MFNConfig(
        atomic_numbers=zs,
        atomic_energies_eV=e0s,
        r_max_A=spec.r_max_A,
        num_layers=spec.num_layers,
        channels=spec.channels,
        max_ell=spec.max_ell,
        correlation=spec.correlation,
        matrix_l_max=spec.matrix_l_max,
        matrix_channels=spec.matrix_channels,
        n_poles=spec.n_poles,
        pole_im_min=spec.pole_im_min,
        matrix_norm=spec.matrix_norm,
        readout_mlp=spec.readout_mlp,
        avg_num_neighbors=avg_num_neighbors,
        scale=scale,
    )


def avg_neighbours(graphs: list) -> float:
    edges = sum(int(g.edge_index.shape[1]) for g in graphs)
    nodes = sum(int(g.num_nodes) for g in graphs)
    return max(edges / max(nodes, 1), 1.0)


def train_mfn(config, train_atoms: list[Atoms], valid_atoms: list[Atoms], workdir, device: str = "cpu", seed: int | None = None) -> str:
    """Train one MFN from an `MFNModelSpec` on labelled Atoms (info REF_energy, arrays REF_forces).

    Returns the path of the saved model (`<workdir>/mfn_seed<seed>.model`).
    """
    from mace.tools.utils import AtomicNumberTable

    if not train_atoms:
        raise ValueError("train_mfn needs at least one training structure")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    seed = config.seeds[0] if seed is None and config.seeds else (seed or 0)
    device = resolve_device(device)
    dtype = DTYPES[config.default_dtype]
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        zs = sorted({int(z) for a in train_atoms for z in a.numbers})
        z_table = AtomicNumberTable(zs)
        train_graphs = mfn_data.graphs(train_atoms, z_table, config.r_max_A)
        valid_graphs = mfn_data.graphs(valid_atoms, z_table, config.r_max_A) if valid_atoms else []
        e0s, scale = data_statistics(train_atoms, zs)
        cfg = mfn_config_from_spec(config, zs, e0s, scale, avg_neighbours(train_graphs))
        model = MFN(cfg)
        result = fit(
            model,
            train_graphs,
            valid_graphs,
            epochs=config.max_num_epochs,
            lr=config.lr,
            energy_weight=config.energy_weight,
            forces_weight=config.forces_weight,
            batch_size=config.batch_size,
            device=device,
            seed=seed,
            patience=config.patience,
        )
        metrics = evaluate(model, mfn_data.loader(train_graphs, config.batch_size), device)
        path = workdir / f"mfn_seed{seed}.model"
        save(model.to("cpu"), str(path), meta={
            "seed": seed,
            "train_rmse_energy_meV_per_atom": metrics["energy_meV_per_atom"],
            "train_rmse_forces_meV_per_A": metrics["forces_meV_per_A"],
            "best_valid_loss": result["best_valid_loss"],
            "wall_s": result["wall_s"],
        })
    finally:
        torch.set_default_dtype(prev)
    return str(path)
