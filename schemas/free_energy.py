"""The free-energy protocol (thesis §3.4.2-3.4.3): umbrella sampling with the trained MLFF along each
reaction's band, umbrella integration (and MBAR beside it) for A(ξ) and ΔA‡ at each temperature, with
the force field kept honest by active learning on the windows.

Input is a finished catalysis run (`run:` its directory: the final model, paths/<reaction>.xyz, the
labels, the reference and the model settings to retrain with) or an explicit model with a band file
per reaction (then σ is monitored and reported, but there is nothing to retrain with). Relative file
names resolve against the protocol file's folder.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Identifier, Strict
from .loading import ProtocolFile
from .nmr import MLFFFiles


class CollectiveVariable(Strict):
    """ξ: `distance` d(a, b) (the thesis's C–O), or `distance_difference` d(a, b) − d(b, c) (a transfer
    of b from a to c, a migration)."""

    kind: Literal["distance", "distance_difference"] = "distance"
    atoms: list[int] = Field(..., description="[a, b] for distance, [a, b, c] for distance_difference")

    @model_validator(mode="after")
    def _atoms(self):
        n = 2 if self.kind == "distance" else 3
        if len(self.atoms) != n or len(set(self.atoms)) != n or min(self.atoms) < 0:
            raise ValueError(f"atoms: {self.kind} takes {n} different atom indices, got {self.atoms}")
        return self


class FreeEnergyReaction(Strict):
    name: Identifier = Field(..., description="the catalysis run's reaction name (its paths/<name>.xyz)")
    cv: CollectiveVariable
    band: str | None = Field(None, description="extxyz band (initial → final); default <run>/paths/<name>.xyz")


class UmbrellaWindows(Strict):
    """Windows evenly spaced in ξ from the band's initial to its final image (thesis §3.4.2: 32 windows,
    75 eV/Å², 1 fs, 10 ps equilibration + 100 ps sampling); each starts from the band at its centre."""

    n_windows: int = Field(32, ge=2)
    spring_eV_per_A2: float = Field(75.0, gt=0)
    timestep_fs: float = Field(1.0, gt=0)
    equilibration_steps: int = Field(10000, ge=0)
    production_steps: int = Field(100000, gt=0)
    sample_every: int = Field(1, ge=1)
    friction_per_fs: float = Field(0.01, gt=0)
    margin_A: float = Field(0.0, ge=0, description="extend the windows this far beyond both ends of the band")


class FreeEnergyActiveLearning(Strict):
    """A window whose per-atom σ exceeds σ_thr has up to `frames_per_window` breaching frames labelled
    with the reference; the model is retrained and the windows rerun, until no window breaches."""

    enabled: bool = True
    sigma_thr_eV: float | None = Field(None, gt=0, description="default: the catalysis run's σ_thr")
    max_iterations: int = Field(5, ge=0)
    frames_per_window: int = Field(3, ge=1, description="a window stops once it has this many breaching frames")
    frame_spacing_steps: int = Field(100, ge=1, description="breaching frames kept at least this many steps apart")
    rerun: Literal["all", "breached"] = Field(
        "all", description="after a retrain rerun every window (A(ξ) from one model) or only those that breached")


class FreeEnergyAnalysis(Strict):
    n_blocks: int = Field(8, ge=2, description="blocks per window for the umbrella-integration errors")
    mbar: bool = Field(True, description="MBAR (pymbar) on the same samples, reported beside umbrella integration")
    mbar_bin_width_A: float = Field(0.01, gt=0)
    grid_points: int = Field(500, ge=10)


class FreeEnergyProtocol(ProtocolFile):
    workflow: Literal["free_energy"]
    name: Identifier = Field(..., description="also the default run directory, runs/<name>")
    run: str | None = Field(None, description="a finished catalysis run directory")
    model: MLFFFiles | None = Field(None, description="explicit model instead of the run's final one")
    reactions: list[FreeEnergyReaction] = Field(..., min_length=1)
    temperatures_K: list[float] = Field([300.0, 500.0], min_length=1, description="thesis: 300 and 500 K")
    windows: UmbrellaWindows = UmbrellaWindows()
    active_learning: FreeEnergyActiveLearning = FreeEnergyActiveLearning()
    analysis: FreeEnergyAnalysis = FreeEnergyAnalysis()
    fixed_atoms: list[int] | None = Field(None, description="default: the band's fixed atoms (its FixAtoms)")
    seed: int = 0

    @model_validator(mode="after")
    def _sources(self):
        if self.run is None:
            if self.model is None:
                raise ValueError("give 'run' (a finished catalysis run) or 'model' with a 'band' per reaction")
            missing = [r.name for r in self.reactions if r.band is None]
            if missing:
                raise ValueError(f"reactions {missing}: without 'run', every reaction needs its 'band' file")
        if min(self.temperatures_K) <= 0 or len(set(self.temperatures_K)) != len(self.temperatures_K):
            raise ValueError("temperatures_K: different temperatures above 0 K")
        names = [r.name for r in self.reactions]
        if len(set(names)) != len(names):
            raise ValueError("reactions: a name appears twice")
        samples = self.windows.production_steps // self.windows.sample_every
        if samples < 2 * self.analysis.n_blocks:
            raise ValueError(f"windows: {samples} samples per window are too few for {self.analysis.n_blocks} blocks")
        return self
