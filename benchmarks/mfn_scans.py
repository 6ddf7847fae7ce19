"""Fig. 6.7-style scans with held-out points: does a model learn a cumulene's length parity and dihedral?

Each model (local MACE, MFN L=0, MFN L=1; thesis §6.7: r_c 3 Å, two layers, n_p = 16 poles, c = 16
matrix channels) is trained from scratch on the energies (no forces) of part of one GFN2-xTB scan and
scored on the rest:

  length scan (n_C = 3…30 at ϕ = 5°): trained on chains i mod 4 ∈ {0, 1} of the scan (n_C = 3, 4, 7, 8, …),
      held out i mod 4 ∈ {2, 3}, so both parities are seen and predicted; scored by R² of the energy
      increments E(n+1) − E(n) that involve a held-out chain (the ±1.2 eV zig-zag; a local model predicts
      a constant increment for n ≳ 8 and scores ≲ 0). Holding out every other chain would leave only
      odd chains to train on, from which no model can know what even chains do.
  angle scan (n_C = 12, ϕ = 0…90° in 3° steps): trained on every other angle, scored by R² on the others.

Writes benchmarks/results/mfn_scans.json ({"length_scan": {model: [R² per seed]}, "angle_scan": {...},
"epochs", "wall_s", ...}) and mfn_scans.png:

    python benchmarks/mfn_scans.py                          # 3 seeds, 4 min per model and scan, 2 at a time
    python benchmarks/mfn_scans.py --seeds 1 --budget-s 120  # one seed, 2 min per model

Labels come from benchmarks/results/cumulene_scans.xyz (benchmarks/mfn_cumulene.py --make-data).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

import reactforge.models.mfn  # noqa: F401  (mace before e3nn)
import e3nn
import torch

e3nn.set_optimization_defaults(jit_script_fx=False)

RESULTS = ROOT / "benchmarks" / "results"
SCAN_FILE = RESULTS / "cumulene_scans.xyz"
MODELS = ("mace", "mfn_l0", "mfn_l1")
# thesis r_c, layers, n_p and c; MACE channels / l_max / correlation cut for one CPU thread (thesis: 128, 3, 3)
SETTINGS = dict(
    channels=16, max_ell=2, correlation=2, matrix_channels=16, n_poles=16, batch_size=4, lr=5e-3,
    energy_weight=1000.0, forces_weight=0.0, matrix_norm="layer", schedule="cosine",
)


def load_scans() -> dict:
    from ase.io import read

    out: dict[str, list] = {}
    for a in read(SCAN_FILE, ":", format="extxyz"):
        out.setdefault(a.info["split"], []).append(a)
    return out


def split(scan: str, n: int) -> tuple[list[int], list[int]]:
    idx = list(range(n))
    if scan == "length_scan":
        return [i for i in idx if i % 4 in (0, 1)], [i for i in idx if i % 4 in (2, 3)]
    return idx[::2], idx[1::2]


def r2(pred, ref) -> float:
    pred, ref = np.asarray(pred), np.asarray(ref)
    ss = np.sum((ref - ref.mean()) ** 2)
    return float(1.0 - np.sum((pred - ref) ** 2) / ss) if ss > 0 else float("nan")


def score(scan: str, pred: np.ndarray, ref: np.ndarray, test: list[int]) -> dict:
    if scan == "length_scan":
        held = set(test)
        pairs = [i for i in range(len(ref) - 1) if i in held or i + 1 in held]
        dp, dr = np.diff(pred), np.diff(ref)
        return {"r2_held_out": r2(dp[pairs], dr[pairs]), "r2_all": r2(dp, dr)}
    return {"r2_held_out": r2(pred[test], ref[test]), "r2_all": r2(pred, ref)}


def train_one(name: str, scan: str, atoms: list, seed: int, budget_s: float, s: dict) -> dict:
    from mace.tools.utils import AtomicNumberTable

    from reactforge.models.mfn import data as D
    from reactforge.models.mfn.train import avg_neighbours, data_statistics, evaluate, fit

    sys_path = str(Path(__file__).resolve().parent)
    import sys

    if sys_path not in sys.path:
        sys.path.insert(0, sys_path)
    from mfn_cumulene import build_model

    torch.manual_seed(seed)
    z = AtomicNumberTable([1, 6])
    graphs = D.graphs(atoms, z, 3.0)
    train, test = split(scan, len(atoms))
    tr = [graphs[i] for i in train]
    e0s, scale = data_statistics([atoms[i] for i in train], [1, 6])
    model = build_model(name, {**s, "pole_im_init": s.get("pole_im_init", (0.1, 1.0))}, e0s, scale, avg_neighbours(tr))
    res = fit(
        model, tr, tr, epochs=100000, lr=s["lr"], energy_weight=s["energy_weight"], forces_weight=s["forces_weight"],
        batch_size=s["batch_size"], seed=seed, max_time_s=budget_s, patience=25, schedule=s["schedule"],
    )
    ev = evaluate(model, D.loader(graphs, 4), "cpu")
    pred, ref = np.array(ev["pred_energy_eV"]), np.array(ev["ref_energy_eV"])
    return {
        **score(scan, pred, ref, test),
        "epochs": len(res["history"]),
        "wall_s": res["wall_s"],
        "pred_energy_eV": pred.tolist(),
        "ref_energy_eV": ref.tolist(),
        "train_index": train,
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"mace": ("tab:red", "MACE (local)"), "mfn_l0": ("tab:blue", "MFN L=0"), "mfn_l1": ("tab:green", "MFN L=1")}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    runs = results["runs"]
    x = {"length_scan": np.array(results["n_carbon"]), "angle_scan": np.array(results["dihedral_deg"])}
    for ax, scan in ((ax1, "length_scan"), (ax2, "angle_scan")):
        first = next((r for r in runs if r["scan"] == scan), None)
        if first is None:
            continue
        ref = np.array(first["ref_energy_eV"])
        xs = x[scan]
        if scan == "length_scan":
            ax.plot(xs[1:], np.diff(ref), "k-o", ms=3, label="GFN2-xTB")
        else:
            ax.plot(xs, ref - ref[0], "k-o", ms=3, label="GFN2-xTB")
        for r in runs:
            if r["scan"] != scan or r["seed"] != first["seed"]:
                continue
            c, lab = styles[r["model"]]
            pred = np.array(r["pred_energy_eV"])
            y = np.diff(pred) if scan == "length_scan" else pred - ref[0]
            ax.plot(xs[1:] if scan == "length_scan" else xs, y, "--", color=c, label=f"{lab} (held-out R²={r['r2_held_out']:.2f})")
        test = [i for i in range(len(ref)) if i not in set(first["train_index"])]
        ax.plot(xs[test], (np.diff(ref, prepend=np.nan) if scan == "length_scan" else ref - ref[0])[test], "kx", ms=6, label="held out")
        ax.legend(fontsize=8)
    ax1.set(xlabel="carbon atoms $n_C$ (ϕ = 5°)", ylabel="E(n) − E(n−1) (eV)", title="length scan: energy increments")
    ax2.set(xlabel="dihedral ϕ (deg), $n_C$ = 12", ylabel="E − E_xTB(0°) (eV)", title="angle scan")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _job(args: tuple) -> tuple:
    """One (scan, model, seed) training in a worker process with its own thread count."""
    scan, m, seed, budget_s, threads = args
    torch.set_num_threads(threads)
    torch.set_default_dtype(torch.float64)
    return scan, m, seed, train_one(m, scan, load_scans()[scan], seed, budget_s, SETTINGS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=240.0, help="training wall clock per model, scan and seed")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--scans", default="length_scan,angle_scan")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training")
    p.add_argument("--jobs", type=int, default=2, help="trainings run side by side (processes)")
    p.add_argument("--out", default=str(RESULTS / "mfn_scans.json"))
    args = p.parse_args(argv)
    t0 = time.time()
    scans = load_scans()
    out = Path(args.out)
    results: dict = {
        "settings": {**SETTINGS, "r_max_A": 3.0, "num_layers": 2, "pole_im_init": [0.1, 1.0], "budget_s": args.budget_s,
                     "threads": args.threads, "jobs": args.jobs, "seeds": args.seeds,
                     "device": f"CPU, {args.jobs} process(es) × {args.threads} thread(s)"},
        "n_carbon": [int((a.numbers == 6).sum()) for a in scans["length_scan"]],
        "dihedral_deg": [float(a.info["dihedral_deg"]) for a in scans["angle_scan"]],
        "runs": [],
    }
    models = [m for m in args.models.split(",") if m]
    scan_names = [s for s in args.scans.split(",") if s]
    jobs = [(scan, m, seed, args.budget_s, args.threads) for scan in scan_names for seed in range(args.seeds) for m in models]
    order = {j[:3]: k for k, j in enumerate(jobs)}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for fut in as_completed([pool.submit(_job, j) for j in jobs]):
            scan, m, seed, r = fut.result()
            results["runs"].append({"scan": scan, "model": m, "seed": seed, **r})
            results["runs"].sort(key=lambda x: order[(x["scan"], x["model"], x["seed"])])
            for sc in scan_names:
                results[sc] = {mm: [x["r2_held_out"] for x in results["runs"] if x["scan"] == sc and x["model"] == mm]
                               for mm in models}
            print(f"{scan} {m} seed {seed}: held-out R² {r['r2_held_out']:.3f} (all {r['r2_all']:.3f}), "
                  f"{r['epochs']} epochs, {r['wall_s']:.0f} s", flush=True)
            results["epochs"] = {f"{x['scan']}/{x['model']}/{x['seed']}": x["epochs"] for x in results["runs"]}
            results["wall_s"] = time.time() - t0
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(results, indent=1))
            os.replace(tmp, out)
    plot(results, out.with_suffix(".png"))
    print(json.dumps({k: results[k] for k in scan_names}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
