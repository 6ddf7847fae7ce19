"""The mechanism benchmark: examples/mechanism.yaml run afresh for each seed, then its reference calls
against direct reference NEBs of every step (benchmarks/reference_calls.py).

    python benchmarks/mechanism.py [--seeds 0 1]
        ->  runs/mechanism-benchmark-seedN (the runs, kept for inspection)
            benchmarks/results/reference_calls_mechanism_seedN.json (ratio, barrier errors, per reaction,
            and the protocol's wall time as `protocol_wall_s`)

Seeds one after the other, each on the whole machine. Seed N > 0 runs a copy of the protocol with
`seed: N` (other rattles, placements and MD trajectories) whose file names are made absolute, so the
copy in runs/ reads the same structures as the example.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mechanism.yaml"


def absolute_files(node, base: Path):
    """The mapping with every `file:` value anchored at `base` (a protocol's own folder)."""
    if isinstance(node, dict):
        return {k: (str((base / v).resolve()) if k == "file" and isinstance(v, str) and not Path(v).is_absolute()
                    else absolute_files(v, base)) for k, v in node.items()}
    if isinstance(node, list):
        return [absolute_files(v, base) for v in node]
    return node


def run_seed(seed: int) -> Path:
    run_dir = ROOT / "runs" / f"mechanism-benchmark-seed{seed}"
    data = absolute_files(yaml.safe_load(EXAMPLE.read_text()), EXAMPLE.parent)
    protocol = run_dir.with_suffix(".yaml")
    protocol.parent.mkdir(parents=True, exist_ok=True)
    protocol.write_text(yaml.safe_dump({**data, "seed": seed}, sort_keys=False))
    t0 = time.time()
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "--site", "local-htex", "--run-dir", str(run_dir),
                        "--force-new", "--no-live", str(protocol)], capture_output=True, text=True, check=False)
    if p.returncode != 0:
        sys.exit(f"mechanism seed {seed} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    print(f"seed {seed}: protocol done in {time.time() - t0:.0f} s", flush=True)
    return run_dir


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    for seed in args.seeds:
        run_dir = run_seed(seed)
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reference_calls.py"), "--name", "mechanism",
                        "--run-dir", str(run_dir)], check=True)


if __name__ == "__main__":
    main()
