"""Which protocol schema and workflow module serve each `workflow:` value of a protocol file."""
from __future__ import annotations

import importlib

WORKFLOWS = {
    # workflow name: (schema "module:Class", workflow module with plan() and run())
    "tasks": ("schemas.batch:BatchProtocol", "workflows.batch"),
    "catalysis": ("schemas.protocol:Protocol", "workflows.catalysis"),
    "nmr": ("schemas.nmr:NMRProtocol", "workflows.nmr"),
}
DEFAULT = "catalysis"


def protocol_class(workflow: str):
    module, cls = WORKFLOWS[workflow][0].split(":")
    return getattr(importlib.import_module(module), cls)


def workflow_module(workflow: str):
    return importlib.import_module(WORKFLOWS[workflow][1])
