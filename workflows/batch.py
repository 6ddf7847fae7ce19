"""Run a list of tasks (protocol `workflow: tasks`): every job concurrently, results to results/."""
from __future__ import annotations

from concurrent.futures import wait

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from reactforge.engine.engine import TaskFailed
from reactforge.schemas.loading import read_structure


def read_structures(protocol, names: list[str], where: str = "structures"):
    """The structures a job names ('file@i' picks frame i), files relative to the protocol's folder; a
    ValueError naming the field `where`.k for a reference that is no frame of a structure file."""
    out = []
    for k, name in enumerate(names):
        path, _, index = name.partition("@")
        try:
            i = int(index) if index else 0
        except ValueError:
            raise ValueError(f"field '{where}.{k}': {name!r}: the frame after '@' must be an integer") from None
        out.append(read_structure(protocol.resolve(path), f"{where}.{k}", i))
    return out


def plan(protocol) -> list[str]:
    for i, job in enumerate(protocol.jobs):
        read_structures(protocol, job.structures, f"jobs.{i}.structures")  # bad input stops here, not mid-run
    return [f"{job.name}: {job.spec.kind} on {len(job.structures)} structure(s)" for job in protocol.jobs]


def run(protocol, engine, store, progress) -> dict:
    progress.set_stage(f"{len(protocol.jobs)} jobs")
    futures = {job.name: engine.submit(job.spec, read_structures(protocol, job.structures))
               for job in protocol.jobs}
    wait(futures.values())
    jobs = {}
    for name, fut in futures.items():
        try:
            result = fut.result()
        except TaskFailed as err:
            jobs[name] = {"status": "failed", "failure_class": err.failure_class, "error": err.message}
            continue
        store.write_json(f"results/{name}.json", result.model_dump(mode="json"))
        jobs[name] = {"status": "done", "kind": result.kind, "result": f"results/{name}.json"}
        if frames := result_frames(result):
            store.write_xyz(f"results/{name}.xyz", frames)
            jobs[name]["structures"] = f"results/{name}.xyz"
        if result.kind == "singlepoint":
            jobs[name]["energy_eV"] = result.energy_eV
    return {"jobs": jobs}


def result_frames(result) -> list[Atoms]:
    """The structures of a result as extxyz frames `ase.io.read`/`ase gui` open (the JSON holds them as
    text): info `field` (and `index` in a list) says where each came from; energies and forces, where the
    result has them per structure, are calculator results."""
    frames = []
    for field in type(result).model_fields:
        value = getattr(result, field)
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(a, Atoms) for a in items):
            continue
        for k, atoms in enumerate(items):
            a = atoms.copy()
            a.info.update({"field": field, **({"index": k} if isinstance(value, list) else {})})
            energy, forces = _energy_and_forces(result, field, k)
            if energy is not None:
                a.calc = SinglePointCalculator(a, energy=energy, **(
                    {"forces": np.asarray(forces, dtype=float)} if forces is not None else {}))
            frames.append(a)
    return frames


def _energy_and_forces(result, field: str, k: int):
    kind = result.kind
    if kind == "singlepoint" and field == "atoms":
        return result.energy_eV, result.forces_eV_per_A
    if kind == "optimise" and field == "final":
        return result.energy_eV, None
    if kind == "neb" and field == "images":
        return result.energies_eV[k], result.forces_eV_per_A[k] if result.forces_eV_per_A else None
    if kind == "minimahopping" and field == "minima" and k < len(result.energies_eV):
        return result.energies_eV[k], None
    return None, None
