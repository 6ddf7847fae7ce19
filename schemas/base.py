"""Shared Pydantic base and the ase.Atoms field used by every schema."""
from __future__ import annotations

import io
import math
import re
from typing import Annotated, Any

from ase import Atoms
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError, core_schema

# Validation context under which numbers are read strictly: files a person wrote (schemas.loading.validate).
USER_INPUT = {"user_input": True}


def _strict_int(value: Any, handler, info) -> Any:
    """An int field of a file a person wrote (USER_INPUT): YAML `true` is no count, nor is `10.0`."""
    if (info.context or {}).get("user_input") and isinstance(value, (bool, float)):
        raise PydanticCustomError("int_type", "an integer is expected, not {value}", {"value": repr(value)})
    return handler(value)


def _strict_float(value: Any, handler, info) -> Any:
    """A float field of a file a person wrote: no `true`, and finite (a threshold of .inf or .nan would disable
    what it bounds); an int still fills it (`temperature_K: 300`). Results computed by tasks are validated
    without the context: an MD segment's σ may legitimately be inf there."""
    if not (info.context or {}).get("user_input"):
        return handler(value)
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "a number is expected, not {value}", {"value": repr(value)})
    out = handler(value)
    if not math.isfinite(out):
        raise PydanticCustomError("finite_number", "a finite number is expected, not {value}", {"value": repr(out)})
    return out


_NUMBER_CHECKS = {"int": _strict_int, "float": _strict_float}


def _with_number_checks(node: Any) -> Any:
    """The core schema with every int and float wrapped in its check (nested models, lists, tuples, unions
    included); wrapped nodes are left alone, so a nested model's schema is not wrapped twice."""
    if isinstance(node, list):
        return [_with_number_checks(v) for v in node]
    if not isinstance(node, dict):
        return node
    kind = node.get("type")  # a schema's type; in a model's fields mapping, maybe a field named `type`
    if isinstance(kind, str) and kind in _NUMBER_CHECKS:
        return core_schema.with_info_wrap_validator_function(_NUMBER_CHECKS[kind], node)
    if kind == "function-wrap" and node["function"].get("function") in _NUMBER_CHECKS.values():
        return node
    return {k: v if k in ("metadata", "serialization") else _with_number_checks(v) for k, v in node.items()}


class Strict(BaseModel):
    """Base of every schema: unknown keys are an error (a typo must not silently become a default), and
    numbers in a user's file are strict (`_strict_int`, `_strict_float`)."""

    model_config = ConfigDict(extra="forbid", frozen=False, arbitrary_types_allowed=True)

    @classmethod
    def __get_pydantic_core_schema__(cls, source, handler):
        # pydantic has no config option that refuses bool-as-number and .inf while keeping int -> float
        # (strict=True would also refuse YAML lists for tuples and "1e-7", a string in YAML, for floats)
        return _with_number_checks(handler(source))


_IDENTIFIER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,99}")


def _identifier(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise PydanticCustomError("identifier", "{name} is no name: it becomes a file name, so letters, digits and "
                                  "'._+-' only, not starting with '.' or '-', at most 100 characters", {"name": repr(name)})
    return name


# A name that becomes a file or folder name (run directory, paths/<reaction>.xyz, results/<job>.json): no
# slash or NUL, no leading `.` (so never `.` or `..`) or `-`, at most 100 characters.
Identifier = Annotated[str, AfterValidator(_identifier),
                       WithJsonSchema({"type": "string", "pattern": f"^{_IDENTIFIER.pattern}$"})]


def atoms_to_text(atoms: Atoms) -> str:
    """extxyz text of one structure, keeping info, arrays, cell, pbc, constraints and calculator results."""
    from ase.io import write

    buf = io.StringIO()
    write(buf, atoms, format="extxyz")
    return buf.getvalue()


def atoms_from_text(text: str) -> Atoms:
    from ase.io import read

    return read(io.StringIO(text), format="extxyz", index=0)


def _coerce_atoms(value: Any) -> Atoms:
    if isinstance(value, Atoms):
        return value
    if isinstance(value, str):
        return atoms_from_text(value)
    raise TypeError("expected ase.Atoms or extxyz text")


# An ase.Atoms that round-trips through JSON as extxyz text (journal, results, hashes).
AtomsField = Annotated[
    Atoms,
    BeforeValidator(_coerce_atoms),
    PlainSerializer(atoms_to_text, return_type=str),
    WithJsonSchema({"type": "string", "description": "structure as extxyz text"}),
]
