"""What an MFN's matrix carries: chain-parity and dihedral signals of H and f(H) on cumulene chains.

A tight-binding-like matrix of a chain sees the chain's length parity in its spectrum and, with p blocks,
the relative orientation of the two CH2 ends. This module measures how much of that reaches the
diagonal of f(H) (what the diagonal update of Eq. 6.20 passes on) and the energy, compared with the
spread of the same quantities across the atoms of one chain:

    python -m reactforge.models.mfn.diagnose            # untrained L=0 / L=1, 'layer' and 'batch' norms

All numbers come from forward hooks on the first layer's pole expansion, so any construction of H can be
measured the same way.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from . import data as mfn_data
from .cumulene import cumulene


def _batch(atoms_list, model) -> dict:
    from mace.tools.utils import AtomicNumberTable

    z = AtomicNumberTable([int(x) for x in model.atomic_numbers.tolist()])
    atoms_list = [a.copy() for a in atoms_list]
    for a in atoms_list:
        a.info["REF_energy"] = 0.0
        a.arrays["REF_forces"] = np.zeros((len(a), 3))
    graphs = mfn_data.graphs(atoms_list, z, float(model.r_max))
    return next(iter(mfn_data.loader(graphs, len(graphs)))).to_dict()


def first_layer(model, atoms, layer: int = 0) -> dict:
    """One structure through the model: normalised H, f(H), invariants of f(H)'s diagonal blocks, energies."""
    ml = model.matrix_layers[layer]
    seen = {}
    hook = ml.function.register_forward_hook(lambda mod, inp, out: seen.update(H=inp[0], fH=out))
    try:
        out = model(_batch([atoms], model), training=False, compute_force=False)
    finally:
        hook.remove()
    H, fH = seen["H"][0].detach(), seen["fH"][0].detach()  # [c, n·M, n·M]
    M = ml.basis.M
    n = len(atoms)
    c = fH.shape[0]
    blocks = torch.diagonal(fH.reshape(c, n, M, n, M), dim1=1, dim2=3).permute(3, 0, 1, 2)  # [n, c, M, M]
    feats = ml.basis.from_blocks(blocks)
    cols, start = [], 0
    for (_, _, ir), d in zip(ml.basis.paths, ml.basis.dims):
        if ir.l == 0:
            cols.append(feats[:, start : start + c * d])
        start += c * d
    return {
        "H": H,
        "fH": fH,
        "diag_invariants": torch.cat(cols, dim=1),  # [n_atoms, invariant components]
        "energy": float(out["energy"].detach()[0]),
        "node_energy": out["node_energy"].detach(),
    }


def _hopping(H: torch.Tensor, M: int, n_c: int) -> dict:
    """RMS of the inner C–C nearest-neighbour blocks against the on-site blocks of the inner carbons."""
    inner = range(1, n_c - 2)
    hop = torch.stack([H[:, i * M : (i + 1) * M, (i + 1) * M : (i + 2) * M] for i in inner])
    on = torch.stack([H[:, i * M : (i + 1) * M, i * M : (i + 1) * M] for i in range(n_c)])
    return {
        "hop_rms": float(hop.pow(2).mean().sqrt()),
        "onsite_spread": float(on.std(dim=0).pow(2).mean().sqrt()),  # across the chain's carbons
        "spectrum_std": float(torch.linalg.eigvalsh(H).std(dim=-1).mean()),
    }


def sensitivity(model, lengths=(4, 5, 6), angles=(0.0, 90.0), atom: int = 0) -> dict:
    """Parity and dihedral dependence of the first layer's f(H)_ii at one chain end, and of the energy.

    f_spread: RMS over invariant components of their spread across the carbons of the middle chain;
    f_dihedral: largest |Δ| of atom `atom`'s invariants between the two angles over the lengths;
    f_parity: |second difference over three consecutive lengths| of the same. e_*: the same for the
    total energy against the spread of the carbons' node energies. The ratios are the relevant numbers:
    a matrix that carries a chain's length parity and end-to-end orientation gives O(0.01–1).
    """
    assert len(lengths) == 3
    model.eval()
    res = {(n, phi): first_layer(model, cumulene(n, phi)) for n in lengths for phi in angles}
    mid = res[lengths[1], angles[0]]
    inv = lambda n, phi: res[n, phi]["diag_invariants"][atom]  # noqa: E731
    f_spread = float(mid["diag_invariants"][: lengths[1]].std(dim=0).pow(2).mean().sqrt())
    f_dihedral = max(float((inv(n, angles[1]) - inv(n, angles[0])).pow(2).mean().sqrt()) for n in lengths)
    n0, n1, n2 = lengths
    f_parity = float((inv(n0, angles[0]) - 2 * inv(n1, angles[0]) + inv(n2, angles[0])).pow(2).mean().sqrt())
    E = {k: v["energy"] for k, v in res.items()}
    e_spread = float(mid["node_energy"][: lengths[1]].std())
    e_dihedral = max(abs(E[n, angles[1]] - E[n, angles[0]]) for n in lengths)
    e_parity = abs(E[n0, angles[0]] - 2 * E[n1, angles[0]] + E[n2, angles[0]])
    M = model.matrix_layers[0].basis.M
    return {
        "lengths": list(lengths),
        "angles_deg": list(angles),
        "f_spread": f_spread,
        "f_dihedral": f_dihedral,
        "f_parity": f_parity,
        "f_dihedral_ratio": f_dihedral / f_spread,
        "f_parity_ratio": f_parity / f_spread,
        "e_spread_eV": e_spread,
        "e_dihedral_eV": e_dihedral,
        "e_parity_eV": e_parity,
        "e_dihedral_ratio": e_dihedral / e_spread,
        "e_parity_ratio": e_parity / e_spread,
        "matrix": _hopping(res[lengths[-1], angles[0]]["H"], M, lengths[-1]),
    }


def dihedral_gradient(model, n_carbon: int = 12) -> dict:
    """|∂(E(90°) − E(0°))/∂θ| against |∂E(0°)/∂θ| for the parameters θ of each matrix-layer module.

    At n_C = 12 the ends are 14 Å apart, beyond two 3 Å layers: only f(H) links them, so the first is the
    gradient a dihedral-energy loss can follow, the second that of any local energy error.
    """
    model.eval()
    params = {name: p for name, p in model.named_parameters() if name.startswith("matrix_layers")}
    out = model(_batch([cumulene(n_carbon, 0.0), cumulene(n_carbon, 90.0)], model), training=False, compute_force=False)
    e0, e90 = out["energy"][0], out["energy"][1]
    g_dih = torch.autograd.grad(e90 - e0, list(params.values()), allow_unused=True, retain_graph=True)
    g_loc = torch.autograd.grad(e0, list(params.values()), allow_unused=True)

    def by_module(grads):
        acc: dict[str, float] = {}
        for (name, _), g in zip(params.items(), grads):
            if g is not None:
                key = ".".join(name.split(".")[:3])
                acc[key] = acc.get(key, 0.0) + float(g.pow(2).sum())
        return {k: v**0.5 for k, v in acc.items()}

    dih, loc = by_module(g_dih), by_module(g_loc)
    return {
        "n_carbon": n_carbon,
        "dE_dihedral_eV": float((e90 - e0).detach()),
        "grad_dE_dihedral": dih,
        "grad_E": loc,
        "ratio": {k: dih.get(k, 0.0) / v for k, v in loc.items() if v > 0},
    }


def untrained(l_max: int, matrix_norm: str, seed: int = 0, **kw):
    from .model import MFNConfig, build

    torch.manual_seed(seed)
    cfg = dict(
        atomic_numbers=[1, 6], atomic_energies_eV=[-13.6, -57.5], channels=16, max_ell=2, correlation=2,
        matrix_channels=16, n_poles=16, matrix_l_max=l_max, matrix_norm=matrix_norm,
    )
    cfg.update(kw)
    return build(MFNConfig(**cfg)).eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--gradient", action="store_true", help="also the n_C = 12 dihedral-loss gradient")
    p.add_argument("--out", help="write the JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    report = []
    for l_max in (0, 1):
        for norm in ("layer", "batch"):
            for seed in range(args.seeds):
                model = untrained(l_max, norm, seed)
                row = {"l_max": l_max, "matrix_norm": norm, "seed": seed, "short": sensitivity(model),
                       "long": sensitivity(model, (10, 11, 12))}
                if args.gradient and l_max == 1:
                    row["gradient"] = g = dihedral_gradient(model)
                    print("  n_C=12 |dE/dθ| / |E/dθ| by module: " + ", ".join(
                        f"{k.split('.', 1)[1]} {v:.1e}" for k, v in g["ratio"].items()
                        if k.split(".")[-1] in ("bond_radial", "site_radial", "species", "function")))
                s, lg = row["short"], row["long"]
                print(
                    f"L={l_max} {norm:5s} seed {seed}: n=4-6 f(H)_C0 dihedral/spread {s['f_dihedral_ratio']:.1e} "
                    f"parity/spread {s['f_parity_ratio']:.1e} | n=10-12 energy dihedral/spread {lg['e_dihedral_ratio']:.1e} "
                    f"parity/spread {lg['e_parity_ratio']:.1e} | hop {s['matrix']['hop_rms']:.3f} "
                    f"on-site spread {s['matrix']['onsite_spread']:.3f} spectrum std {s['matrix']['spectrum_std']:.3f}",
                    flush=True,
                )
                report.append(row)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
