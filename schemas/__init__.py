"""Schemas: the contract between protocol files, workflows, the engine and tasks."""
from .base import AtomsField, Strict, atoms_from_text, atoms_to_text  # noqa: F401
