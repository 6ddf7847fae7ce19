"""The embedded default end to end: wall time, labels, reference calls and barrier errors.

    python benchmarks/quickstart.py  ->  benchmarks/results/quickstart.json

Runs `run.py --site local examples/quickstart.yaml` in a fresh run directory (what `make demo` does)
and collects the figures the README quotes from its summary.json.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        t0 = time.time()
        p = subprocess.run([sys.executable, str(ROOT / "run.py"), "--site", "local", "--run-dir", str(run_dir),
                            "--no-live", str(ROOT / "examples" / "quickstart.yaml")], capture_output=True, text=True)
        wall = time.time() - t0
        if p.returncode != 0:
            sys.exit(f"quickstart failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        summary = json.loads((run_dir / "summary.json").read_text())
    out = {
        "command": "python run.py --site local examples/quickstart.yaml",
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
    dest = ROOT / "benchmarks" / "results" / "quickstart.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
