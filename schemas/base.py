"""Shared Pydantic base and the ase.Atoms field used by every schema."""
from __future__ import annotations

import io
from typing import Annotated, Any

from ase import Atoms
from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema


class Strict(BaseModel):
    """Base of every schema: unknown keys are an error (a typo must not silently become a default)."""

    model_config = ConfigDict(extra="forbid", frozen=False, arbitrary_types_allowed=True)


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
