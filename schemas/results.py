"""Task results. Structures travel as AtomsField (extxyz text in JSON), so every result is journaled."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import AtomsField, Strict
from .tasks import ModelRef


class SinglePointResult(Strict):
    kind: Literal["singlepoint"] = "singlepoint"
    atoms: AtomsField = Field(..., description="input structure (no calculator)")
    energy_eV: float
    forces_eV_per_A: list[list[float]]
    stress_eV_per_A3: list[float] | None = Field(None, description="Voigt order xx yy zz yz xz xy")
    reference: str = Field(..., description="code and method, e.g. 'xtb:GFN2-xTB'")
    scf_fallback_used: bool = False
    wall_s: float = 0.0


class MDResult(Strict):
    kind: Literal["md"] = "md"
    sampled: AtomsField = Field(..., description="breaching configuration, else the highest-σ one")
    breached: bool
    step_sampled: int
    steps_run: int
    max_sigma_eV: float = Field(..., description="largest per-atom σ over the segment")
    sigma_trace_eV: list[list[float]] = Field(..., description="per checked step, per-atom σ")
    trace_steps: list[int]
    final: AtomsField
    resumed_from_step: int = Field(0, description="the checkpointed step a resumed attempt continued from")


class OptimiseResult(Strict):
    kind: Literal["optimise"] = "optimise"
    final: AtomsField
    energy_eV: float
    converged: bool
    steps: int
    fmax_eV_per_A: float
    max_sigma_eV: float
    energies_eV: list[float]
    breached: bool = Field(False, description="stopped at σ > σ_thr (only with stop_on_breach)")


class NEBResult(Strict):
    kind: Literal["neb"] = "neb"
    images: list[AtomsField]
    energies_eV: list[float]
    forward_barrier_eV: float
    reaction_energy_eV: float
    converged: bool
    steps: int
    max_sigma_eV: float = Field(..., description="largest per-atom σ over the final images")
    fmax_eV_per_A: float = Field(
        ...,
        description="final convergence measure: largest per-atom NEB force, or with precon ASE's preconditioned "
        "residual (climbing image included)",
    )
    sigma_per_image_eV: list[float] = Field(default_factory=list, description="largest per-atom σ of each image")
    climbing_image: int | None = Field(None, description="index of the climbing (highest interior) image")
    climbing_steps: int = Field(0, description="optimiser steps taken with the climbing image on")
    fmax_initial_eV_per_A: float | None = Field(None, description="largest NEB force on the starting band (step 0)")
    energy_evaluations: int = Field(0, description="energy + force calculations on all images, endpoints included "
                                                   "(with a reference: the reference calls this NEB cost)")
    forces_eV_per_A: list[list[list[float]]] | None = Field(
        None, description="per image, per atom, xyz: the forces behind energies_eV (paths/*.xyz carries them)")


class MinimaHoppingResult(Strict):
    kind: Literal["minimahopping"] = "minimahopping"
    minima: list[AtomsField]
    energies_eV: list[float]
    sigma_per_minimum_eV: list[float] = Field(default_factory=list, description="largest per-atom σ of each minimum")
    hops: int = Field(0, description="MD + optimisation hops performed")
    resumed: bool = Field(False, description="continued a search an earlier attempt had started")
    breaching: AtomsField | None = Field(None, description="the configuration whose σ exceeded the spec's "
                                                           "sigma_thr_eV; the search stopped there")
    max_sigma_eV: float | None = Field(None, description="largest per-atom σ of any evaluation of the search "
                                                         "(this attempt's, when resumed)")
    temperature_K: float | None = Field(None, description="the search's MD temperature when it stopped (ASE adapts "
                                                          "it to what the hops find): a continued search starts there")


class UmbrellaWindowResult(Strict):
    kind: Literal["umbrellawindow"] = "umbrellawindow"
    centre_A: float
    spring_eV_per_A2: float
    temperature_K: float
    cv_A: list[float] = Field(..., description="production CV time series d(i, j)")
    final: AtomsField
    sample_interval_fs: float = Field(1.0, gt=0, description="time between CV samples")
    max_sigma_eV: float | None = Field(None, description="largest per-atom σ at the sampled production steps")
    resumed_from_step: int = Field(0, description="the checkpointed step a resumed attempt continued from")
    breached: bool = Field(False, description="a sampled production frame exceeded the spec's sigma_thr_eV")
    breaching: list[AtomsField] = Field(default_factory=list, description="breaching frames, to label")
    steps_run: int = Field(0, description="MD steps run; fewer than asked when it stopped on breaching frames")


class NMRShieldingResult(Strict):
    kind: Literal["nmrshielding"] = "nmrshielding"
    atoms: AtomsField
    shielding_ppm: list[list[list[float]]] = Field(..., description="per atom 3×3 σ tensor, ppm")
    efg_au: list[list[list[float]]] | None = Field(None, description="per atom 3×3 V, atomic units")
    source: str


class TrainResult(Strict):
    kind: Literal["train"] = "train"
    model: ModelRef
    n_configs: int
    train_rmse_energy_meV_per_atom: float | None = None
    train_rmse_forces_meV_per_A: float | None = None
    wall_s: float = 0.0
    e0_eV: dict[str, float] = Field(default_factory=dict, description="element -> isolated-atom energy used")
    commands: list[str] = Field(default_factory=list, description="gap_fit / mace_run_train command lines")


class EvaluateResult(Strict):
    kind: Literal["evaluate"] = "evaluate"
    energies_eV: list[float] = Field(..., description="per structure")
    forces_eV_per_A: list[list[list[float]]] = Field(..., description="per structure, per atom, xyz")
    sigma_per_atom_eV: list[list[float]] = Field(..., description="per structure, per atom")


class ProbeResult(Strict):
    kind: Literal["probe"] = "probe"
    host: str
    pid: int
    python: str


class VibrationsResult(Strict):
    kind: Literal["vibrations"] = "vibrations"
    energy_eV: float = Field(..., description="MLFF energy of the undisplaced structure")
    frequencies_Hz: list[float] = Field(..., description="real part of each mode's frequency")
    frequencies_imag_Hz: list[float] = Field(..., description="imaginary part (non-zero for unstable modes)")
    indices: list[int] = Field(..., description="atoms displaced")

    def frequencies(self):
        """The modes as complex numbers in Hz (ase.vibrations' convention: imaginary modes imaginary)."""
        import numpy as np

        return np.asarray(self.frequencies_Hz) + 1j * np.asarray(self.frequencies_imag_Hz)
