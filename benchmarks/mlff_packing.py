"""Many small MLFF tasks on one node: HTEX workers vs ranks of one MPI job (mpi4py).

    python benchmarks/mlff_packing.py  ->  benchmarks/results/mlff_packing.json

Umbrella windows and MD replicas are many independent, single-core MLFF runs. On ARCHER2 one HTEX block
already packs `max_workers` of them into one SLURM job on one node (128 workers, one per core), so a task
never holds a whole node. The question here is whether running them instead as the ranks of one MPI job
(`mpirun -n W python -m ...`, each rank taking every W-th task, mpi4py gathering the results) is faster.
Both run the same task function (tasks/md.py) on the same W cores; the HTEX figure is measured warm (the
pool is up, as in a campaign) and cold (the pool's start included), the MPI one always includes its start,
since each batch is a new job.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import wait
from pathlib import Path

import numpy as np
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT

ROOT = Path(__file__).resolve().parents[1]

from reactforge.engine.engine import Engine
from reactforge.schemas.loading import read_yaml, validate
from reactforge.schemas.site import SiteConfig
from reactforge.schemas.tasks import GAPModelSpec, MDSpec, SOAPDescriptor, TrainSpec
from reactforge.tasks.context import TaskContext

WORKERS, TASKS, STEPS = 2, 8, 300

RANK_SCRIPT = """
import sys, time
from mpi4py import MPI
from ase.io import read
from reactforge.schemas.tasks import MDSpec
from reactforge.tasks.context import TaskContext
from reactforge.tasks.md import run
comm = MPI.COMM_WORLD
specs = [MDSpec.model_validate_json(line) for line in open(sys.argv[1])]
slab = read(sys.argv[2])
mine = [run(s, [slab], TaskContext(workdir=f"{sys.argv[3]}/{i}")).steps_run
        for i, s in enumerate(specs) if i % comm.size == comm.rank]
done = comm.gather(sum(mine), root=0)
if comm.rank == 0:
    print("steps", sum(done))
"""


def tiny_gap(workdir: Path):
    from reactforge.tasks.train import run

    data = []
    for seed in range(10):
        a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
        a.rattle(0.08, seed=seed)
        a.calc = EMT()
        a.info["REF_energy"] = a.get_potential_energy()
        a.arrays["REF_forces"] = a.get_forces()
        a.calc = None
        data.append(a)
    from ase import Atoms

    iso = Atoms("Cu", cell=[10.0] * 3, pbc=True)
    iso.calc = EMT()
    iso.info.update(REF_energy=iso.get_potential_energy(), config_type="isolated_atom")
    iso.arrays["REF_forces"] = np.zeros((1, 3))
    iso.calc = None
    data.append(iso)
    soap = SOAPDescriptor(rcut_hard_A=4.0, rcut_soft_A=3.5, l_max=3, alpha_max=4, n_sparse=40)
    spec = TrainSpec(model=GAPModelSpec(soap=[soap], sigma_energy_eV=0.002, sigma_force_eV_per_A=0.02))
    return run(spec, data, TaskContext(workdir=workdir)).model


def main():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tiny_gap(tmp / "gap")
        slab = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=8.0)
        slab.pbc = True
        specs = lambda offset: [MDSpec(model=model, steps=STEPS, check_every=10, sigma_thr_eV=1e9, seed=offset + i)
                                for i in range(TASKS)]

        raw = read_yaml(ROOT / "site-configs" / "local-htex.yaml")
        raw["executors"]["ml"]["max_workers"] = WORKERS
        raw["executors"]["ml"]["provider"]["worker_init"] = "export OMP_NUM_THREADS=1"
        site = validate("local-htex.yaml", raw, SiteConfig)
        t0 = time.perf_counter()
        with Engine(site, tmp / "run") as engine:
            wait([engine.submit(s, [slab]) for s in specs(0)])
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            wait([engine.submit(s, [slab]) for s in specs(100)])
            warm = time.perf_counter() - t0

        from ase.io import write

        (tmp / "specs.jsonl").write_text("\n".join(s.model_dump_json() for s in specs(200)) + "\n")
        write(tmp / "slab.xyz", slab)
        (tmp / "ranks.py").write_text(RANK_SCRIPT)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
        t0 = time.perf_counter()
        out = subprocess.run(["mpirun", "--allow-run-as-root", "-n", str(WORKERS), sys.executable, str(tmp / "ranks.py"),
                              str(tmp / "specs.jsonl"), str(tmp / "slab.xyz"), str(tmp / "mpi")],
                             capture_output=True, text=True, env=env, check=True)
        mpi = time.perf_counter() - t0
        assert f"steps {TASKS * STEPS}" in out.stdout, out.stdout + out.stderr

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "workers": WORKERS,
        "tasks": TASKS, "md_steps_per_task": STEPS, "system": "tiny GAP, Cu(111) 2x2x3 slab",
        "htex_warm_s": round(warm, 2), "htex_cold_s": round(cold, 2), "mpi_job_s": round(mpi, 2),
        "mpi_vs_htex_warm": round(warm / mpi, 2),
        "adopted": warm / mpi > 1.1,
    }
    print(result)
    dest = ROOT / "benchmarks" / "results" / "mlff_packing.json"
    dest.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
