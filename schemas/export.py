"""Write the JSON Schemas of protocol and site files to schemas/json/ (python -m reactforge.schemas.export)."""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import TypeAdapter

from .batch import BatchProtocol
from .exploration import ExplorationProtocol
from .finetune import FinetuneProtocol
from .free_energy import FreeEnergyProtocol
from .kinds import TaskSpec
from .nmr import NMRProtocol
from .protocol import Protocol
from .site import SiteConfig
from .transfer import TransferProtocol

SCHEMAS = {
    "catalysis-protocol": Protocol,
    "nmr-protocol": NMRProtocol,
    "free-energy-protocol": FreeEnergyProtocol,
    "exploration-protocol": ExplorationProtocol,
    "finetune-protocol": FinetuneProtocol,
    "transfer-protocol": TransferProtocol,
    "tasks-protocol": BatchProtocol,
    "site": SiteConfig,
    "task-spec": TaskSpec,
}


def schemas() -> dict[str, dict]:
    return {name: TypeAdapter(model).json_schema() for name, model in SCHEMAS.items()}


def main(dest: Path = Path(__file__).parent / "json") -> None:
    dest.mkdir(exist_ok=True)
    for name, schema in schemas().items():
        (dest / f"{name}.schema.json").write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(dest / f"{name}.schema.json")


if __name__ == "__main__":
    main()
