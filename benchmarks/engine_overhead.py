"""Engine overhead per task: ThreadPool vs HTEX, and journal replay on resume.

    python benchmarks/engine_overhead.py  ->  benchmarks/results/engine_overhead.json

N EMT single points of rattled 4-atom Cu cells (the calculation itself takes ~1 ms, so the figures are
the engine's and Parsl's cost: hashing, journaling, serialising structures, scheduling).
"""
from __future__ import annotations

import json
import platform
import tempfile
import time
from concurrent.futures import wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from ase.build import bulk

from reactforge.schemas.loading import read_yaml, validate
from reactforge.schemas.site import SiteConfig
from reactforge.schemas.tasks import EMTReference, SinglePointSpec
from reactforge.engine.engine import Engine

N = 200


def structures(seed0: int):
    out = []
    for i in range(N):
        a = bulk("Cu", cubic=True)
        a.rattle(0.02, seed=seed0 + i)
        out.append(a)
    return out


def measure(site_name: str) -> dict:
    site = validate(site_name, read_yaml(ROOT / "site-configs" / f"{site_name}.yaml"), SiteConfig)
    spec = SinglePointSpec(reference=EMTReference())
    with tempfile.TemporaryDirectory() as tmp:
        cells = structures(0)
        with Engine(site, Path(tmp)) as engine:
            t0 = time.perf_counter()
            engine.run(spec, [cells[0]])
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            wait([engine.submit(spec, [a]) for a in cells[1:]])
            steady = (time.perf_counter() - t0) / (N - 1)
        with Engine(site, Path(tmp)) as engine:  # resume: every task answered by the journal
            t0 = time.perf_counter()
            wait([engine.submit(spec, [a]) for a in cells])
            replay = (time.perf_counter() - t0) / N
    return {"first_task_s": round(first, 3), "per_task_ms": round(1e3 * steady, 2),
            "journal_replay_per_task_ms": round(1e3 * replay, 2)}


def main():
    out = {"n_tasks": N, "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
           "python": platform.python_version(), "executors": {}}
    for site in ("local", "local-htex"):
        out["executors"][site] = measure(site)
        print(site, out["executors"][site], flush=True)
    dest = ROOT / "benchmarks" / "results" / "engine_overhead.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
