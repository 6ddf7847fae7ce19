"""Umbrella sampling: MLFF samples per second per core, the projection to an ARCHER2 node, and the
analytic check of the free-energy analysis.

    python benchmarks/free_energy.py --run-dir runs/quickstart-zno-vacancy [--fe-run runs/quickstart-free-energy]
        ->  benchmarks/results/free_energy.json (+ free_energy_quickstart.png)

- MLFF speed: one `umbrellawindow` task (tasks/umbrella.py as the engine runs it, one thread, σ checked
  every step) with the run's final model on the quickstart's H2-heterolytic band image at its barrier
  (17 atoms), and on that image repeated 5 × 1 (85 atoms, about the thesis's 84). samples/s per core =
  MD steps per second of one single-threaded window; windows are independent, so a 128-core ARCHER2 node
  runs 128 of them: samples/day/node = 128 × 86 400 × that rate, if an ARCHER2 core (EPYC 7742) is as fast
  as one here (not measured). The thesis: 9.2 steps/s for 84 atoms on 128 cores, 10⁷ samples/day.
- analytic: 24 windows of ASE Langevin MD (the umbrella task's restraint, 1 fs, k = 75 eV/Å²) on the 2-D
  model of tests/free_energy_model.py at 300 K, two processes; umbrella integration and MBAR against the
  closed-form ΔA‡.
- with --fe-run, the finished `examples/quickstart-free-energy.yaml` run: its summary's free_energy block,
  wall time and report/free_energy.png (copied beside the JSON).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one window, one core

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the analytic model lives with the tests that use it

ANALYTIC = dict(temperature_K=300.0, windows=24, spring=75.0, equilibration=1000, production=12000, friction=0.2)
THESIS = {"atoms": 84, "cores": 128, "steps_per_s": 9.2, "samples_per_day": 1e7}


def mlff_rate(model, atoms, cv_atoms, steps: int, workdir: Path) -> dict:
    """MD steps per second of one umbrellawindow task (after a short warm-up)."""
    from reactforge.schemas.tasks import UmbrellaWindowSpec
    from reactforge.tasks import umbrella
    from reactforge.tasks.context import TaskContext

    centre = float(atoms.get_distance(*cv_atoms, mic=True))
    spec = dict(model=model, atom_i=cv_atoms[0], atom_j=cv_atoms[1], centre_A=centre, equilibration_steps=0,
                sigma_thr_eV=10.0, temperature_K=300.0)
    umbrella.run(UmbrellaWindowSpec(**spec, production_steps=5), [atoms], TaskContext(workdir=workdir / "warm"))
    t0 = time.perf_counter()
    result = umbrella.run(UmbrellaWindowSpec(**spec, production_steps=steps), [atoms],
                          TaskContext(workdir=workdir / f"run{len(atoms)}"))
    wall = time.perf_counter() - t0
    rate = len(result.cv_A) / wall
    return {"atoms": len(atoms), "steps": steps, "wall_s": round(wall, 2), "samples_per_s_per_core": round(rate, 2),
            "max_sigma_eV": result.max_sigma_eV}


def analytic_window(args) -> np.ndarray:
    centre, seed = args
    from free_energy_model import langevin_window

    a = ANALYTIC
    return langevin_window(centre, a["spring"], a["temperature_K"], a["production"], a["equilibration"],
                           a["friction"], seed)


def analytic_check() -> dict:
    from free_energy_model import A_A, C_A, exact_barrier

    from reactforge.workflows.free_energy_analysis import Window, mbar_profile, umbrella_integration

    a = ANALYTIC
    centres = np.linspace(C_A - A_A - 0.2, C_A + A_A + 0.2, a["windows"])
    t0 = time.perf_counter()
    with ProcessPoolExecutor(2) as pool:
        series = list(pool.map(analytic_window, [(c, k) for k, c in enumerate(centres)]))
    md_wall = time.perf_counter() - t0
    windows = [Window(c, a["spring"], s) for c, s in zip(centres, series)]
    ui = umbrella_integration(windows, a["temperature_K"])
    mbar = mbar_profile(windows, a["temperature_K"], guess=ui)
    return {"temperature_K": a["temperature_K"], "exact_barrier_eV": round(exact_barrier(a["temperature_K"]), 5),
            "ui_barrier_eV": round(ui.barrier_eV, 5), "ui_error_eV": round(ui.error_eV, 5),
            "mbar_barrier_eV": round(mbar.barrier_eV, 5), "mbar_error_eV": round(mbar.error_eV, 5),
            "potential_barrier_eV": 0.2, "windows": a["windows"], "spring_eV_per_A2": a["spring"],
            "steps_per_window": a["equilibration"] + a["production"], "samples_per_window": a["production"],
            "friction_per_fs": a["friction"], "md_wall_s": round(md_wall, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "quickstart-zno-vacancy",
                    help="a finished quickstart run (its final model and paths/H2-heterolytic.xyz)")
    ap.add_argument("--model", type=Path, help="a GAP xml to time instead of the run's final model (then the "
                    "structure is the quickstart's H2@Zn intermediate as built from examples/quickstart.yaml)")
    ap.add_argument("--fe-run", type=Path, help="a finished examples/quickstart-free-energy.yaml run to summarise")
    ap.add_argument("--steps", type=int, default=300, help="MD steps timed per structure")
    ap.add_argument("--reaction", default="H2-heterolytic")
    ap.add_argument("--only", choices=["analytic", "mlff", "example"],
                    help="measure one part (example: only summarise --fe-run); the JSON keeps the others' last figures")
    ap.add_argument("--cv-atoms", type=int, nargs=2, default=[15, 16], help="the H–H distance of the quickstart")
    args = ap.parse_args()
    import tempfile

    from ase.io import read

    from reactforge.workflows.free_energy import _run_model

    results = ROOT / "benchmarks" / "results"
    dest = results / "free_energy.json"
    out = json.loads(dest.read_text()) if dest.exists() and args.only else {}
    out.update({"command": "python benchmarks/free_energy.py --run-dir runs/quickstart-zno-vacancy",
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                "thesis": THESIS})
    if args.only in (None, "mlff"):
        if args.model:
            from reactforge.engine.store import Store
            from reactforge.schemas.loading import load_protocol
            from reactforge.schemas.protocol import Protocol
            from reactforge.workflows.catalysis_build import build_system

            model = Store.model_ref("gap", [args.model])
            system = build_system(load_protocol(ROOT / "examples" / "quickstart.yaml", Protocol))
            top, source = system.intermediates["H2@Zn"].copy(), f"{args.model}, H2@Zn as built"
        else:
            run_dir = args.run_dir.resolve()
            model = _run_model(run_dir)
            band = read(run_dir / "paths" / f"{args.reaction}.xyz", ":")
            energies = [im.info.get("energy_mlff_eV", 0.0) for im in band]
            top, source = band[int(np.argmax(energies))], f"{args.run_dir}: final model, {args.reaction} band top"
        top.info = {}
        with tempfile.TemporaryDirectory() as tmp:
            small = mlff_rate(model, top, args.cv_atoms, args.steps, Path(tmp))
            large = mlff_rate(model, top.repeat((5, 1, 1)), args.cv_atoms, args.steps, Path(tmp))
        per_day = {name: round(128 * 86400 * r["samples_per_s_per_core"]) for name, r in
                   (("quickstart", small), ("slab_85", large))}
        out.update({
            "model": {"kind": model.model, "sha256": model.sha256, "timed_on": source},
            "mlff": {"quickstart": small, "slab_85": large},
            "archer2_projection": {"cores_per_node": 128, "samples_per_day_per_node": per_day,
                                   "assumes": "one single-threaded window per core; an ARCHER2 core as fast as one here"},
        })
    if args.only in (None, "analytic"):
        out["analytic"] = analytic_check()
    if args.fe_run:
        import shutil

        summary = json.loads((args.fe_run / "summary.json").read_text())
        out["example"] = {"command": "python run.py --site local-htex examples/quickstart-free-energy.yaml",
                          "wall_s": summary.get("wall_s"), "status": summary.get("status"),
                          "free_energy": summary.get("free_energy"),
                          "active_learning": {k: summary.get("free_energy_active_learning", {}).get(k)
                                              for k in ("iterations", "labels_added", "reference_calls",
                                                        "termination_met", "criterion_value", "history")}}
        shutil.copyfile(args.fe_run / "report" / "free_energy.png", results / "free_energy_quickstart.png")
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
