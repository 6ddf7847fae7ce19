"""What the engine costs per task, what two workers buy, and what a force field saves over its reference.

    python benchmarks/engine.py            ->  benchmarks/results/engine.json   (~30 min on 2 cores)
    python benchmarks/engine.py --quick    ->  a smoke run, written to a temporary file

- overhead_ms_per_task: 500 probe tasks (they compute nothing) through local-htex, journal included: the
  wall time from the first submit to the last result, per task, after the pool has started.
- speedup_two_concurrent_singlepoints: two GFN2-xTB single points of the slab below on a pool of two
  single-threaded workers, one after the other vs at once.
- cost_per_eval_s: one energy + forces (+ σ for the force fields: what the protocol evaluates) of the same
  81-atom slab (a water film) with a GAP (thesis appendix A descriptors), a MACE committee (the project's
  defaults), GFN2-xTB and Quantum ESPRESSO; `ratios` are reference cost / force-field cost.
- md_steps_per_s: MLFF Langevin MD on that slab through tasks/md.py (σ checked every step).

The force fields are trained on a few xTB-labelled configurations: what they predict does not matter
here, only what an evaluation costs, which depends on their size (descriptors, sparse points, channels),
not on their training data; the GAP's sparse points are capped by the atoms available (see `settings`).
Quantum ESPRESSO: PBE, PAW (H.pbe-kjpaw, O.pbe-kjpaw), 50/400 Ry, Γ point, 2 MPI ranks.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import wait
from pathlib import Path

import numpy as np
from ase.build import bulk, surface

ROOT = Path(__file__).resolve().parents[1]

from reactforge.engine.engine import Engine
from reactforge.schemas.loading import read_yaml, validate
from reactforge.schemas.site import SiteConfig
from reactforge.schemas.tasks import (
    EspressoReference,
    GAPModelSpec,
    MACEModelSpec,
    MDSpec,
    ProbeSpec,
    SinglePointSpec,
    SOAPDescriptor,
    TrainSpec,
    XTBReference,
)
from reactforge.tasks import md as md_task
from reactforge.tasks import singlepoint
from reactforge.tasks import train as train_task
from reactforge.tasks.context import TaskContext
from reactforge.tasks.mlff import load_mlff


def water_film():
    """27 H2O at liquid density (a 3×3×3 grid, random orientations) as a film in a 9.3 Å × 9.3 Å slab
    cell with 14 Å of vacuum: 81 atoms that every code here computes, Quantum ESPRESSO included (Debian's
    pseudopotentials have no Zn for the quickstart's ZnO, and GFN2-xTB's SCF fails on rattled MgO)."""
    from ase import Atoms
    from ase.build import molecule
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    spacing = 3.105  # Å: 27 molecules in (3 × 3.105 Å)³ = 1.0 g/cm³
    film = Atoms(cell=[3 * spacing, 3 * spacing, 3 * spacing + 14.0], pbc=True)
    for i in range(3):
        for j in range(3):
            for k in range(3):
                w = molecule("H2O")
                w.positions = Rotation.random(random_state=rng.integers(1 << 31)).apply(w.positions)
                w.translate((np.array([i, j, k]) + 0.5) * spacing + [0, 0, 7.0])
                film += w
    return film


def site(name: str) -> SiteConfig:
    return validate(f"{name}.yaml", read_yaml(ROOT / "site-configs" / f"{name}.yaml"), SiteConfig)


def overhead(n: int) -> dict:
    out = {}
    for name in ("local-htex", "local"):
        with tempfile.TemporaryDirectory() as tmp:
            with Engine(site(name), Path(tmp)) as engine:
                engine.run(ProbeSpec(tag=-1), [])  # the pool starts and imports once
                t0 = time.perf_counter()
                wait([engine.submit(ProbeSpec(tag=i), []) for i in range(n)])
                per_task = (time.perf_counter() - t0) / n
            with Engine(site(name), Path(tmp)) as engine:  # a resume: every task answered by the journal
                t0 = time.perf_counter()
                wait([engine.submit(ProbeSpec(tag=i), []) for i in range(n)])
                replay = (time.perf_counter() - t0) / n
        out[name] = {"ms_per_task": round(1e3 * per_task, 2), "journal_replay_ms_per_task": round(1e3 * replay, 3)}
        print(name, out[name], flush=True)
    return out


def speedup(slab) -> dict:
    raw = read_yaml(ROOT / "site-configs" / "local-htex.yaml")
    raw["executors"]["reference"]["max_workers"] = 2
    raw["executors"]["reference"]["provider"]["worker_init"] = "export OMP_NUM_THREADS=1"
    pool = validate("local-htex.yaml (two reference workers)", raw, SiteConfig)
    spec = SinglePointSpec(reference=XTBReference())
    configs = []
    for seed in range(5):
        a = slab.copy()
        a.rattle(0.05, seed=seed)
        configs.append(a)
    with tempfile.TemporaryDirectory() as tmp, Engine(pool, Path(tmp)) as engine:
        engine.run(spec, [configs[0]])  # the workers start and load tblite
        t0 = time.perf_counter()
        for a in configs[1:3]:
            engine.run(spec, [a])
        serial = time.perf_counter() - t0
        t0 = time.perf_counter()
        wait([engine.submit(spec, [a]) for a in configs[3:5]])
        concurrent = time.perf_counter() - t0
    return {"serial_s": round(serial, 2), "concurrent_s": round(concurrent, 2),
            "speedup": round(serial / concurrent, 2)}


PLAIN = """
import sys, time
from ase.io import read
from tblite.ase import TBLite
atoms = read(sys.argv[1])
atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
t0 = time.perf_counter()
atoms.get_forces()
print(time.perf_counter() - t0)
"""


def plain_processes(slab) -> dict:
    """The same two single points as two bare Python processes, no engine: what the machine's two
    cores give two xTB runs at once, the bound the engine's speedup is measured against."""
    import subprocess

    from ase.io import write

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for seed in (11, 12):
            a = slab.copy()
            a.rattle(0.05, seed=seed)
            files.append(Path(tmp) / f"{seed}.xyz")
            write(files[-1], a)
        run = lambda f: subprocess.Popen([sys.executable, "-c", PLAIN, str(f)], env=env, stdout=subprocess.PIPE, text=True)
        serial = sum(float(run(f).communicate()[0]) for f in files)
        t0 = time.perf_counter()
        procs = [run(f) for f in files]
        inside = max(float(p.communicate()[0]) for p in procs)
        concurrent = time.perf_counter() - t0
    return {"serial_s": round(serial, 2), "concurrent_s": round(inside, 2), "speedup": round(serial / inside, 2),
            "concurrent_wall_s_with_start": round(concurrent, 2)}


def _labelled(slab, n: int, workdir: Path):
    """n rattled slabs with GFN2-xTB labels, plus the isolated atoms a GAP takes its E0 from."""
    from ase import Atoms

    ctx = TaskContext(workdir=workdir)
    spec = SinglePointSpec(reference=XTBReference())
    def label(atoms, config_type):
        result = singlepoint.run(spec, [atoms], ctx)
        a = result.atoms.copy()
        a.info.update(REF_energy=result.energy_eV, config_type=config_type)
        a.arrays["REF_forces"] = np.asarray(result.forces_eV_per_A)
        return a

    out = []
    for seed in range(n):
        a = slab.copy()
        a.rattle(0.05, seed=100 + seed)
        out.append(label(a, "slab"))
    # isolated atoms last: the GAP's E0s
    out += [label(Atoms(s, cell=[12.0] * 3, pbc=True), "isolated_atom") for s in ("H", "O")]
    return out


def _per_eval(calc, slab, repeats: int) -> float:
    times = []
    for k in range(repeats):
        a = slab.copy()
        a.rattle(0.01, seed=k)  # a new geometry each time: nothing cached
        a.calc = calc
        t0 = time.perf_counter()
        a.get_forces()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def costs(slab, quick: bool, workdir: Path) -> tuple[dict, dict, dict]:
    cost, md_rate, settings = {}, {}, {}
    data = _labelled(slab, 6 if quick else 12, workdir / "labels")
    per_species = min(sum(a.get_chemical_symbols().count(s) for a in data[:-2]) for s in ("H", "O"))
    n_sparse = min(2500, per_species)
    gap = GAPModelSpec(soap=[SOAPDescriptor(n_sparse=n_sparse),
                             SOAPDescriptor(rcut_hard_A=6.0, rcut_soft_A=5.5, n_sparse=n_sparse)])
    # One member is trained; the committee the protocol evaluates (3 members, one evaluation each) is
    # timed as that member loaded three times: the cost is the same, training three would not fit in
    # memory here (a 256-channel member on this slab trains in ~8 GB)
    mace = MACEModelSpec(max_num_epochs=1, batch_size=4, committee_size=1)
    members = 1 if quick else 3
    settings["training_configs"] = len(data) - 2
    settings["gap"] = f"two turbo-SOAP terms (4 Å, 6 Å; l_max 4, alpha_max 8), {n_sparse} sparse points per species"
    settings["mace"] = (f"committee of {members}, {mace.hidden_irreps}, r_max {mace.r_max_A} Å, "
                        f"{mace.num_interactions} interactions, float64")
    for name, model in (("gap", gap), ("mace", mace)):
        trained = train_task.run(TrainSpec(model=model), data, TaskContext(workdir=workdir / name, threads=2))
        if name == "mace":
            trained.model.paths = trained.model.paths * members
        calc = load_mlff(trained.model)
        cost[name] = _per_eval(calc, slab, 3 if quick else 10)
        steps = 5 if quick else (200 if name == "gap" else 40)
        spec = MDSpec(model=trained.model, steps=steps, check_every=1, sigma_thr_eV=1e9,
                      )
        t0 = time.perf_counter()
        result = md_task.run(spec, [slab], TaskContext(workdir=workdir / f"md-{name}"))
        md_rate[name] = round(result.steps_run / (time.perf_counter() - t0), 2)
        print(name, f"{cost[name]:.4f} s/eval, {md_rate[name]} MD steps/s", flush=True)

    ctx = TaskContext(workdir=workdir / "sp", env={"OMP_NUM_THREADS": "1"})
    t0 = time.perf_counter()
    singlepoint.run(SinglePointSpec(reference=XTBReference()), [slab], ctx)
    cost["xtb"] = time.perf_counter() - t0
    print("xtb", f"{cost['xtb']:.2f} s", flush=True)
    if not quick and shutil.which("pw.x"):
        qe = EspressoReference(pseudopotentials={"H": "H.pbe-kjpaw.UPF", "O": "O.pbe-kjpaw.UPF"},
                               ecutwfc_Ry=50.0, ecutrho_Ry=400.0, kspacing_per_A=None, conv_thr_eV=1e-6)
        settings["qe"] = "PBE, PAW (H.pbe-kjpaw, O.pbe-kjpaw), 50/400 Ry, Γ point, 2 MPI ranks"
        ctx = TaskContext(workdir=workdir / "qe", launch="mpirun --allow-run-as-root -n 2",
                          env={"OMP_NUM_THREADS": "1"})
        t0 = time.perf_counter()
        singlepoint.run(SinglePointSpec(reference=qe), [slab], ctx)
        cost["qe"] = time.perf_counter() - t0
        print("qe", f"{cost['qe']:.1f} s", flush=True)
    return cost, md_rate, settings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small counts, no QE, JSON to a temporary file")
    ap.add_argument("--parts", nargs="+", choices=("overhead", "speedup", "costs"), default=("overhead", "speedup", "costs"),
                    help="measure only these; the others keep their figures in the JSON")
    args = ap.parse_args()
    dest = Path(tempfile.gettempdir()) / "engine-quick.json" if args.quick else ROOT / "benchmarks" / "results" / "engine.json"
    slab = water_film()
    n = 50 if args.quick else 500
    out = json.loads(dest.read_text()) if dest.exists() else {}
    out.update({"machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
                "slab": f"water film, 27 H2O in a 9.3 x 9.3 Å slab cell, {len(slab)} atoms"})
    if "overhead" in args.parts:
        per_site = overhead(n)
        out["overhead_ms_per_task"] = per_site["local-htex"]["ms_per_task"]
        out["overhead"] = {"n_tasks": n, "task": "probe (computes nothing)", **per_site}
    if "speedup" in args.parts:
        s = speedup(slab)
        out["speedup_two_concurrent_singlepoints"] = s["speedup"]
        out["speedup"] = {"reference": "GFN2-xTB", **s, "two_plain_processes": plain_processes(slab)}
        print("speedup", out["speedup"], flush=True)
    if "costs" in args.parts:
        with tempfile.TemporaryDirectory() as tmp:
            cost, md_rate, settings = costs(slab, args.quick, Path(tmp))
        out["cost_per_eval_s"] = {k: round(v, 5) for k, v in cost.items()}
        out["ratios"] = {f"{ref}/{ff}": round(cost[ref] / cost[ff], 1)
                         for ref in ("xtb", "qe") if ref in cost for ff in ("gap", "mace")}
        out["md_steps_per_s"] = md_rate
        out["settings"] = settings
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    sys.exit(main())
