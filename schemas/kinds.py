"""The task kinds, declared once: everything else (the spec and result unions, the worker's dispatch,
the codes in a task's key, which executor runs it) is derived from this table.

A new task kind is a spec class (schemas/tasks.py), a result class (schemas/results.py), a task file
(tasks/<module>.py with `run(spec, structures, ctx) -> result`) and one line in KINDS.

Resources say what a spec computes, which is what a site routes on (site `resources:`):
  reference     calls the reference code (single points, reference optimisations and NEBs, shieldings):
                the reference executor, its MPI launch prefix and environment
  mlff          simulations and evaluations with the force field (MD, minimisation, evaluate, vibrations)
  training      MACE / MFN fits (a GPU where the site has one)
  training_cpu  gap_fit, which is CPU-only and must not queue for a GPU node
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Union

from pydantic import Field

from . import results as R
from . import tasks as T

RESOURCES = ("reference", "mlff", "training", "training_cpu")

# the libraries whose versions enter the key of a task that evaluates a force field
MLFF_CODES = ("ase", "quippy-ase", "mace-torch", "torch")


def reference_or_mlff(spec) -> str:
    """Optimisations and NEBs run on the reference when the spec names one instead of a model."""
    return "reference" if getattr(spec, "reference", None) is not None else "mlff"


def by_model_kind(spec) -> str:
    return "training_cpu" if spec.model.model == "gap" else "training"


@dataclass(frozen=True)
class Kind:
    spec: type
    result: type
    module: str  # tasks/<module>.py
    codes: tuple[str, ...]  # distributions (besides reactforge and numpy) whose versions key the task
    resource: str | Callable[[object], str]

    @property
    def name(self) -> str:
        return self.spec.model_fields["kind"].default

    def resource_of(self, spec) -> str:
        return self.resource if isinstance(self.resource, str) else self.resource(spec)


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind(T.SinglePointSpec, R.SinglePointResult, "singlepoint", ("ase", "tblite"), "reference"),
    Kind(T.MDSpec, R.MDResult, "md", MLFF_CODES, "mlff"),
    Kind(T.OptimiseSpec, R.OptimiseResult, "optimise", MLFF_CODES, reference_or_mlff),
    Kind(T.NEBSpec, R.NEBResult, "neb", MLFF_CODES, reference_or_mlff),
    Kind(T.MinimaHoppingSpec, R.MinimaHoppingResult, "minimahopping", MLFF_CODES, "mlff"),
    Kind(T.UmbrellaWindowSpec, R.UmbrellaWindowResult, "umbrella", MLFF_CODES, "mlff"),
    Kind(T.NMRShieldingSpec, R.NMRShieldingResult, "nmrshielding", ("ase",), "reference"),
    Kind(T.TrainSpec, R.TrainResult, "train", MLFF_CODES, by_model_kind),
    Kind(T.EvaluateSpec, R.EvaluateResult, "evaluate", MLFF_CODES, "mlff"),
    Kind(T.VibrationsSpec, R.VibrationsResult, "vibrations", MLFF_CODES, "mlff"),
    Kind(T.ProbeSpec, R.ProbeResult, "probe", (), lambda spec: spec.resource),
)}

TaskSpec = Annotated[Union[tuple(k.spec for k in KINDS.values())], Field(discriminator="kind")]
TaskResult = Annotated[Union[tuple(k.result for k in KINDS.values())], Field(discriminator="kind")]
