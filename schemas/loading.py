"""Read YAML into schemas with errors that name the file and the field.

A protocol is loaded once, by `load_protocol`: it validates the file and records the file's folder, and
`protocol.resolve(name)` is then the one place a relative file name in it becomes a path.
"""
from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, PrivateAttr, TypeAdapter, ValidationError

from .base import USER_INPUT, Strict

T = TypeVar("T")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# Bounds on a YAML document, checked before anything expands it: aliases share nodes, but ${VAR} expansion
# and validation walk every copy, so ten nested aliases of ten make 10^10 leaves (a "billion laughs").
MAX_BYTES = 2_000_000
MAX_NODES = 100_000  # nodes as expanded, every alias counted as a copy of its anchor
MAX_DEPTH = 100  # far beyond any protocol, well inside Python's recursion limit


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


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML would keep the last silently), recursive aliases, and
    documents deeper than MAX_DEPTH or larger than MAX_NODES once aliases are expanded."""

    def __init__(self, stream):
        super().__init__(stream)
        self._nodes, self._depth, self._size = 0, 0, {}  # _size: id(node) -> its size with aliases expanded

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            anchored = self.anchors.get(event.anchor)
            if anchored is not None and id(anchored) not in self._size:
                raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} refers to a node that contains it",
                                                  event.start_mark)
            self._count(self._size.get(id(anchored), 0), event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                              self.peek_event().start_mark)
        before = self._nodes
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._count(1, node.start_mark)
        self._size[id(node)] = self._nodes - before
        return node

    def _count(self, n: int, mark) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            raise yaml.composer.ComposerError(None, None, f"more than {MAX_NODES} values (aliases expanded)", mark)

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then overriding a key is allowed
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"field {key!r} given twice (first on line {seen[key] + 1})", key_node.start_mark)
                seen[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: the base class says so
                continue
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path, expand_env: bool = False) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, ["file not found"])
    if path.stat().st_size > MAX_BYTES:
        raise InputError(path, [f"larger than {MAX_BYTES // 1_000_000} MB; a protocol or site file is a few kB"])
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(path, [f"not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})"]) from None
    loader = _BoundedLoader(text)
    loader.name = str(path)  # marks in messages name the file, not "<unicode string>"
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as err:
        raise InputError(path, [f"not valid YAML: {err}"]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise InputError(path, ["top level must be a mapping of field: value"])
    return _expand_env(data, "", path) if expand_env else data


def read_structure(path: Path, where: str, index: int = 0):
    """Frame `index` (negative: from the end) of a structure file a protocol names, as ase.Atoms. A file that is
    missing, that ASE cannot read, or that has no such frame is a ValueError naming the field `where`; the plan
    calls it, so bad input stops before a run directory exists."""
    from ase.io import read

    if not path.is_file():
        raise ValueError(f"field '{where}': no such file {str(path)!r}")
    try:
        frames = read(path, index=":")
    except Exception as err:  # noqa: BLE001 - ASE's readers fail on a non-structure file with any error at all
        raise ValueError(f"field '{where}': {path} is not a structure file ASE can read "
                         f"({type(err).__name__}: {err})") from None
    if not -len(frames) <= index < len(frames):  # ASE itself reads frame 0 for @-5 of a one-frame file
        raise ValueError(f"field '{where}': {path} has {len(frames)} frame(s), so no frame {index}")
    return frames[index]


def validate(path: str | Path, data: dict, model: type[T] | Any) -> T:
    """Validate `data` against a model class or an annotated union; field paths in the message."""
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(data, context=USER_INPUT)
        return TypeAdapter(model).validate_python(data, context=USER_INPUT)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"]) or "(top level)"
            hint = _did_you_mean(model, e["loc"]) if e["type"] == "extra_forbidden" else ""
            problems.append(f"field '{field}': {e['msg']}{hint}")
        raise InputError(path, problems) from None


def _members(tp: Any) -> list[Any]:
    """The concrete types behind Annotated, Optional and unions."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        return [m for a in typing.get_args(tp) for m in _members(a)]
    return [tp]


def _tags(cls: type[BaseModel]) -> set:
    """Names pydantic may put in an error's location for a union member: class name, Literal field values."""
    tags = {cls.__name__}
    for info in cls.model_fields.values():
        for m in _members(info.annotation):
            if typing.get_origin(m) is Literal:
                tags.update(typing.get_args(m))
    return tags


def _field_names(cls: type[BaseModel]) -> list[str]:
    return [n for name, info in cls.model_fields.items() for n in (name, info.alias) if n]


def _did_you_mean(model: Any, loc: tuple) -> str:
    """' (did you mean ...?)' with the allowed names closest to the unknown key at the end of `loc`, found by
    following `loc` through the model's field types; '' when none is close."""
    kinds = _members(model)
    for key in loc[:-1]:
        models = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        if isinstance(key, str) and models and not any(key in k.model_fields for k in models):
            tagged = [k for k in models if key in _tags(k)]  # a union member's tag, not a field: stay, narrowed
            kinds = tagged or kinds
            continue
        step = []
        for k in kinds:
            if isinstance(k, type) and issubclass(k, BaseModel):
                if isinstance(key, str) and key in k.model_fields:
                    step += _members(k.model_fields[key].annotation)
            elif typing.get_origin(k) in (list, tuple, set, frozenset) and isinstance(key, int):
                args = [a for a in typing.get_args(k) if a is not Ellipsis]
                step += [m for a in (args[key:key + 1] if typing.get_origin(k) is tuple and len(args) > 1 else args)
                         for m in _members(a)]
            elif typing.get_origin(k) is dict:
                step += _members(typing.get_args(k)[1])
        kinds = step
    names = sorted({n for k in kinds if isinstance(k, type) and issubclass(k, BaseModel) for n in _field_names(k)})
    close = difflib.get_close_matches(str(loc[-1]), names, n=3, cutoff=0.7) if loc else []
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


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
    protocol._base_dir = base_dir(path)
    return protocol


PROTOCOL_BASE = "protocol.base"


def base_dir(path: Path) -> Path:
    """The folder a protocol file's relative names resolve against: its own, or for a run directory's
    copy the original's, which the run recorded in protocol.base beside it."""
    recorded = path.parent / PROTOCOL_BASE
    if recorded.is_file():
        return Path(recorded.read_text().strip())
    return path.resolve().parent
