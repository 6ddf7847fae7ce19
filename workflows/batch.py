"""Run a list of tasks (protocol `workflow: tasks`): every job concurrently, results to results/."""
from __future__ import annotations

from concurrent.futures import wait

from ase.io import read

from reactforge.engine.engine import TaskFailed


def read_structures(protocol, names: list[str]):
    """The structures a job names ('file@i' picks frame i), files relative to the protocol's folder."""
    out = []
    for name in names:
        path, _, index = name.partition("@")
        out.append(read(protocol.resolve(path), index=int(index) if index else 0))
    return out


def plan(protocol) -> list[str]:
    for i, job in enumerate(protocol.jobs):
        for k, name in enumerate(job.structures):
            if not protocol.resolve(name.partition("@")[0]).is_file():
                raise ValueError(f"field 'jobs.{i}.structures.{k}': no such file {name!r}")
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
