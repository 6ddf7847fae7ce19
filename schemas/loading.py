"""Read YAML into schemas with errors that name the file and the field.

A protocol is loaded once, by `load_protocol`: it validates the file and records the file's folder, and
`protocol.resolve(name)` is then the one place a relative file name in it becomes a path.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, PrivateAttr, TypeAdapter, ValidationError

from .base import Strict

T = TypeVar("T")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class InputError(Exception):
    """Bad user input: the CLI prints it and exits with status 2."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{self.path}: " + "; ".join(problems))

    def __str__(self) -> str:
        return "\n".join(f"{self.path}: {p}" for p in self.problems)


def _expand_env(obj: Any, where: str, path: Path) -> Any:
    if isinstance(obj, dict):
        return {k: _expand_env(v, f"{where}.{k}" if where else str(k), path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_expand_env(v, f"{where}[{i}]", path) for i, v in enumerate(obj)]
    if isinstance(obj, str):
        def sub(m: re.Match) -> str:
            if m.group(1) not in os.environ:
                raise InputError(path, [f"{where}: environment variable {m.group(1)} is not set"])
            return os.environ[m.group(1)]

        return _ENV.sub(sub, obj)
    return obj


def read_yaml(path: str | Path, expand_env: bool = False) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, ["file not found"])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputError(path, [f"not valid YAML: {err}"]) from None
    if not isinstance(data, dict):
        raise InputError(path, ["top level must be a mapping of field: value"])
    return _expand_env(data, "", path) if expand_env else data


def validate(path: str | Path, data: dict, model: type[T] | Any) -> T:
    """Validate `data` against a model class or an annotated union; field paths in the message."""
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(data)
        return TypeAdapter(model).validate_python(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"]) or "(top level)"
            problems.append(f"field '{field}': {e['msg']}")
        raise InputError(path, problems) from None


class ProtocolFile(Strict):
    """Base of the protocols (catalysis, nmr, tasks): relative file names in a protocol are relative to the
    folder of the file it was loaded from."""

    _base_dir: Path | None = PrivateAttr(None)  # recorded by load_protocol

    @property
    def base_dir(self) -> Path:
        """The protocol file's folder; the working directory for a protocol built in code."""
        return self._base_dir if self._base_dir is not None else Path.cwd()

    def resolve(self, name: str | Path) -> Path:
        """The path of a file the protocol names (absolute names and ~ as given)."""
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.base_dir / path


P = TypeVar("P", bound=ProtocolFile)


def load_protocol(path: str | Path, schema: type[P] | Callable[[dict], type[P]]) -> P:
    """Read, validate and anchor a protocol file: its relative file names then resolve against its folder.

    schema: the protocol class, or a function of the file's mapping that picks it (by its `workflow:`
    field; it raises InputError for an unknown one)."""
    path = Path(path)
    data = read_yaml(path)
    model = schema if isinstance(schema, type) else schema(data)
    protocol = validate(path, data, model)
    protocol._base_dir = path.resolve().parent
    return protocol
