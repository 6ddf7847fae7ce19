"""Run a list of tasks (protocol `workflow: tasks`): every job concurrently, results to results/."""
from __future__ import annotations

from concurrent.futures import wait

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
        if result.kind == "singlepoint":
            jobs[name]["energy_eV"] = result.energy_eV
    return {"jobs": jobs}
