"""The embedded default end to end: wall time, labels, reference calls and barrier errors.

    python benchmarks/quickstart.py [--seed N | --seeds N ... [--merge]] [--from-run DIR]
        ->  benchmarks/results/quickstart.json (quickstart_seedN.json for N > 0)
            with --seeds also benchmarks/results/quickstart_seeds.json (one row per seed, median wall time)

Runs `run.py --site local-htex examples/quickstart.yaml` afresh in runs/quickstart-benchmark (what
`make demo` does; an earlier benchmark run there is deleted first) and collects the figures the README
quotes from its summary.json; the run directory stays for benchmarks/reference_calls.py. --seed N runs
the same protocol with `seed: N` (other rattles, placements and MD trajectories: an independent repeat)
in runs/quickstart-benchmark-seedN. With --from-run, summarises a run directory that command already
made (its own wall time and how many tasks came from a journal). --seeds runs the seeds one after the
other (each on the whole machine) and writes the per-seed files and quickstart_seeds.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_fresh(seed: int) -> tuple[dict, float, Path]:
    run_dir = ROOT / "runs" / ("quickstart-benchmark" + (f"-seed{seed}" if seed else ""))
    if run_dir.exists():  # a measurement from scratch: nothing answered from an earlier journal
        shutil.rmtree(run_dir)
    protocol = ROOT / "examples" / "quickstart.yaml"
    if seed:
        data = yaml.safe_load(protocol.read_text())
        protocol = run_dir.with_suffix(".yaml")
        protocol.write_text(yaml.safe_dump({**data, "seed": seed}, sort_keys=False))
    t0 = time.time()
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "--site", "local-htex", "--run-dir", str(run_dir),
                        "--force-new", "--no-live", str(protocol)],
                       capture_output=True, text=True, check=False)
    wall = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"quickstart failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return json.loads((run_dir / "summary.json").read_text()), wall, run_dir


def measure(seed: int, from_run: Path | None = None) -> dict:
    if from_run:
        run_dir = from_run.resolve()
        summary = json.loads((run_dir / "summary.json").read_text())
        wall = summary["wall_s"]
    else:
        summary, wall, run_dir = run_fresh(seed)
    # tasks this invocation answered from the journal (a resumed or partly reused run), if recorded
    cached = sum(c.get("cached", 0) for c in summary.get("executors", {}).values()) if "executors" in summary else None
    seed = yaml.safe_load((run_dir / "protocol.yaml").read_text()).get("seed", 0)
    out = {
        "command": "python run.py --site local-htex examples/quickstart.yaml"
        + (f" (a copy with seed: {seed})" if seed else ""),
        "seed": seed,
        "run_dir": str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir),
        "tasks_answered_from_journal": cached,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "wall_s": round(wall, 1),
        "reference_calls": summary["reference_calls"],
        "training_set_size": summary["training_set_size"],
        "failed_tasks": len(summary["failures"]),
        "blocks": {name: {k: b[k] for k in ("iterations", "labels_added", "reference_calls", "termination_met",
                                            "criterion_value")} for name, b in summary["blocks"].items()},
        "barriers": summary["barriers"],
        "validation": {name: {k: v.get(k) for k in ("reference_fmax_step0_eV_per_A", "steps", "converged",
                                                    "reference_barrier_eV", "error")}
                       for name, v in summary.get("validation", {}).items()},
    }
    dest = ROOT / "benchmarks" / "results" / (f"quickstart_seed{seed}.json" if seed else "quickstart.json")
    dest.write_text(json.dumps(out, indent=2) + "\n")
    return out


def seed_row(out: dict) -> dict:
    """One seed in quickstart_seeds.json. The barrier error counts only converged validation NEBs (an
    unconverged one is no reference barrier); its difference is reported beside, and a reaction without
    a converged reference makes `all_barriers_checked` false."""
    rows = out["barriers"]
    errors = [b["abs_error_eV"] for b in rows if b.get("abs_error_eV") is not None]
    unconverged = [b["abs_error_vs_unconverged_eV"] for b in rows if b.get("abs_error_vs_unconverged_eV") is not None]
    return {"seed": out["seed"], "wall_s": out["wall_s"], "reference_calls": out["reference_calls"],
            "max_abs_barrier_error_eV": max(errors) if errors else None,
            "max_abs_error_vs_unconverged_validation_eV": max(unconverged) if unconverged else None,
            "all_barriers_checked": len(errors) == len(rows) and bool(rows),
            "barriers": {b["reaction"]: {"mlff_eV": b["mlff_barrier_eV"], "reference_eV": b["reference_barrier_eV"],
                                         "validation_converged": b.get("validation_converged"),
                                         "validation_steps": b.get("validation_steps"),
                                         "validation_step0_fmax_eV_per_A": b.get("validation_step0_fmax_eV_per_A")}
                         for b in rows},
            "blocks_not_terminated": sorted(n for n, b in out["blocks"].items() if not b["termination_met"])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="protocol seed (0: examples/quickstart.yaml as it is)")
    ap.add_argument("--seeds", type=int, nargs="+", help="run these seeds in turn; also writes quickstart_seeds.json")
    ap.add_argument("--from-run", type=Path, help="summarise this finished run instead of running one")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other seeds' rows of quickstart_seeds.json (a series measured in parts)")
    args = ap.parse_args()
    if not args.seeds:
        print(json.dumps(measure(args.seed, args.from_run), indent=2))
        return
    dest = ROOT / "benchmarks" / "results" / "quickstart_seeds.json"
    kept = [r for r in json.loads(dest.read_text())["runs"] if r["seed"] not in args.seeds] \
        if args.merge and dest.exists() else []
    runs = []
    for seed in args.seeds:  # the file is rewritten after each seed: an interrupted series keeps what it measured
        runs.append(seed_row(measure(seed)))
        rows = sorted(kept + runs, key=lambda r: r["seed"])
        seeds = " ".join(str(r["seed"]) for r in rows)
        out = {"command": f"python benchmarks/quickstart.py --seeds {seeds}"
                          + (f" (in parts; this part: --seeds {' '.join(map(str, args.seeds))} --merge)" if kept else ""),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
               "runs": rows, "median_wall_s": statistics.median(r["wall_s"] for r in rows),
               "max_wall_s": max(r["wall_s"] for r in rows)}
        dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
