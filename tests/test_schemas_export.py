"""The committed JSON Schemas are the ones the Pydantic schemas produce (regenerate: python -m reactforge.schemas.export)."""
import json
from pathlib import Path

from reactforge.schemas.export import schemas


def test_committed_json_schemas_are_current():
    folder = Path(__file__).resolve().parents[1] / "schemas" / "json"
    for name, schema in schemas().items():
        committed = json.loads((folder / f"{name}.schema.json").read_text())
        assert committed == json.loads(json.dumps(schema, sort_keys=True)), f"{name}: run python -m reactforge.schemas.export"
