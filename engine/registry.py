"""Which protocol schema and workflow module serve each `workflow:` value of a protocol file."""
from __future__ import annotations

import importlib

WORKFLOWS = {
    # workflow name: (schema "module:Class", workflow module with plan() and run())
    "tasks": ("reactforge.schemas.batch:BatchProtocol", "reactforge.workflows.batch"),
    "catalysis": ("reactforge.schemas.protocol:Protocol", "reactforge.workflows.catalysis"),
    "nmr": ("reactforge.schemas.nmr:NMRProtocol", "reactforge.workflows.nmr"),
    "free_energy": ("reactforge.schemas.free_energy:FreeEnergyProtocol", "reactforge.workflows.free_energy"),
    "exploration": ("reactforge.schemas.exploration:ExplorationProtocol", "reactforge.workflows.exploration"),
    "finetune": ("reactforge.schemas.finetune:FinetuneProtocol", "reactforge.workflows.finetune"),
    "transfer": ("reactforge.schemas.transfer:TransferProtocol", "reactforge.workflows.transfer"),
}
DEFAULT = "catalysis"


def protocol_class(workflow: str):
    module, cls = WORKFLOWS[workflow][0].split(":")
    return getattr(importlib.import_module(module), cls)


def workflow_module(workflow: str):
    return importlib.import_module(WORKFLOWS[workflow][1])
