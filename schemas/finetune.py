"""The fine-tuning protocol (thesis chapter 4, Fig. 4.3a): sample with a foundation model, pick the
configurations its fine-tuned committee is least sure about after the fact, label them with the reference,
fine-tune, repeat.

The foundation is a MACE model file the user supplies (MACE-MP-0's `.model` on a cluster, or a model this
project trained); nothing is downloaded. Structures to sample are files, or a finished catalysis run's site
slab and intermediates. Relative file names resolve against the protocol file's folder.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Identifier, Strict
from .loading import ProtocolFile
from .tasks import Reference


class FinetuneSampling(Strict):
    """MD with the foundation model (then the fine-tuned one), without the σ interrupt: one trajectory per
    structure and temperature, all at once. A trajectory is `snapshots` segments of steps/snapshots steps;
    each segment's last frame is a candidate and the next segment starts from it with fresh Maxwell-Boltzmann
    momenta (an Andersen-like resampling that keeps the canonical ensemble)."""

    temperatures_K: list[float] = Field([300.0, 600.0], min_length=1)
    steps: int = Field(2000, ge=1, description="MD steps per trajectory")
    snapshots: int = Field(20, ge=1, description="candidate frames per trajectory, evenly spaced")
    timestep_fs: float = Field(1.0, gt=0)
    friction_per_fs: float = Field(0.01, gt=0)

    @model_validator(mode="after")
    def _segments(self):
        if self.snapshots > self.steps:
            raise ValueError(f"snapshots ({self.snapshots}) cannot exceed steps ({self.steps})")
        return self


class FinetuneSelection(Strict):
    """Which frames are labelled each iteration: the `candidates` most uncertain (largest per-atom force
    spread of the committee, eV/Å), thinned to `labels_per_iteration` by farthest-point sampling of their
    average SOAP. The first iteration starts from `initial_labels` FPS-diverse frames of the foundation's MD."""

    labels_per_iteration: int = Field(20, ge=1, description="K frames labelled per iteration")
    candidates: int | None = Field(None, ge=1, description="top-M by uncertainty before FPS; default 3K")
    initial_labels: int = Field(5, ge=2, description="first iteration's seed labels (mace needs ≥ 2: one validates)")
    committee_size: int = Field(3, ge=2, description="fine-tuned members (seeds; each validates on another frame)")
    soap_cutoff_A: float = Field(5.0, gt=0)
    soap_l_max: int = Field(4, ge=0)
    soap_n_max: int = Field(6, ge=1)
    soap_atom_sigma_A: float = Field(0.5, gt=0)


class FinetuneTraining(Strict):
    """mace_run_train's fine-tuning (`--foundation_model`): naive fine-tuning of all weights on the labels, or,
    with `replay_file` (the foundation's own training data as extxyz), mace's multi-head fine-tuning that
    replays `replay_samples` of them beside the new labels."""

    max_num_epochs: int = Field(200, ge=1)
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(4, ge=1)
    energy_weight: float = Field(1.0, ge=0)
    forces_weight: float = Field(10.0, ge=0)
    patience: int = Field(50, ge=1)
    ema_decay: float | None = Field(0.99, gt=0, lt=1)
    default_dtype: Literal["float32", "float64"] = "float64"
    replay_file: str | None = Field(None, description="the foundation's training data (extxyz) to replay")
    replay_samples: int = Field(1000, ge=1, description="configurations of replay_file kept (mace num_samples_pt)")


class FinetuneHeldOut(Strict):
    """The test set of each iteration: MD frames of its fine-tuned model, labelled with the reference and
    never trained on (kept in finetune/held_out-<i>.xyz, not in labels.db)."""

    snapshots: int = Field(5, ge=1, description="frames per structure and temperature")
    steps: int | None = Field(None, ge=1, description="MD steps per trajectory; default sampling.steps")


class FinetuneProtocol(ProtocolFile):
    workflow: Literal["finetune"]
    name: Identifier = Field(..., description="also the default run directory, runs/<name>")
    foundation_model: str = Field(..., description="a MACE .model file (e.g. MACE-MP-0's, downloaded beforehand)")
    structures: list[str] | None = Field(None, description="structure files; every frame of each is a start")
    run: str | None = Field(None, description="a finished catalysis run: its site slab and intermediates")
    reference: Reference | None = Field(None, description="default: the run's")
    sampling: FinetuneSampling = FinetuneSampling()
    selection: FinetuneSelection = FinetuneSelection()
    training: FinetuneTraining = FinetuneTraining()
    held_out: FinetuneHeldOut = FinetuneHeldOut()
    iterations: int = Field(2, ge=1)
    max_force_eV_per_A: float = Field(50.0, gt=0, description="larger reference forces are discarded")
    seed: int = 0

    @model_validator(mode="after")
    def _sources(self):
        if (self.structures is None) == (self.run is None):
            raise ValueError("give exactly one of 'structures' (files) or 'run' (a finished catalysis run)")
        if self.run is None and self.reference is None:
            raise ValueError("'reference' is needed with 'structures' (a run brings its own)")
        return self
