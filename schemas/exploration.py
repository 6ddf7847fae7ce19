"""The adsorbate-exploration protocol (thesis §3.4.3, Fig. 3.7): minima hopping with the trained MLFF from
several placements of each intermediate around the active site, the minima de-duplicated by the SOAP
environments of the adsorbate's atoms, their adsorption energies, and the lowest relaxed on the reference.

Input is a finished catalysis run (`run:` its directory: the final model, the protocol that builds the
slab, the site and the intermediates, its reference) or, with `model`, an explicit model beside it.
Relative file names resolve against the protocol file's folder.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Identifier, Strict
from .loading import ProtocolFile
from .nmr import MLFFFiles


class ExplorationStarts(Strict):
    """Starting placements per intermediate: block 3's placements around the site (pymatgen sites within
    the radius, random rotation about the normal) on the bare site slab, thinned by farthest-point
    sampling of the adsorbate's SOAP environments (thesis: ten CatKit starts per intermediate)."""

    per_intermediate: int = Field(10, ge=1)
    candidates: int = Field(40, ge=1, description="placements drawn before FPS keeps per_intermediate of them")
    radius_A: float | None = Field(None, gt=0, description="default: the run's block-3 placement_radius_A")
    rattle_A: float = Field(0.05, ge=0, description="adsorbate displacement off the symmetric site, where the "
                                                    "relaxation could stop at a saddle (an ontop site)")


class Hopping(Strict):
    """ase.optimize.minimahopping settings of every start (the minimahopping task)."""

    T0_K: float = Field(1000.0, gt=0)
    Ediff0_eV: float = Field(0.5, gt=0)
    mdmin: int = Field(2, ge=1)
    fmax_eV_per_A: float = Field(0.05, gt=0, description="each minimum's relaxation; the site slab's too")
    timestep_fs: float = Field(1.0, gt=0)
    n_minima: int = Field(10, ge=1, description="a start stops once it has recorded this many minima")
    max_hops: int = Field(30, ge=1)
    max_optimisation_steps: int = Field(1000, ge=1)


class Deduplication(Strict):
    """SOAP of the adsorbate's atoms, like atoms paired (appendix A: l_max 4, n_max 8, atom_sigma 0.4,
    cutoff 6 Å, transition 0.5 Å); a minimum within `threshold` of a lower one is that one."""

    cutoff_A: float = Field(6.0, gt=0)
    l_max: int = Field(4, ge=0)
    n_max: int = Field(8, ge=1)
    atom_sigma_A: float = Field(0.4, gt=0)
    transition_A: float = Field(0.5, ge=0)
    threshold: float = Field(0.05, gt=0, description="largest per-atom SOAP distance √(2 − 2 p·q) of one minimum")


class ExplorationActiveLearning(Strict):
    """Active learning during the hops (thesis §3.4.3: ten AL iterations): a search whose MD or relaxation
    exceeds σ_thr stops at that configuration, which is labelled with the run's reference; the model is
    refitted on the run's labels plus these and every interrupted start continues from its last minimum
    with the new model, until no search breaches. The last allowed round hops without the interrupt, and
    how many minima stay above σ_thr is reported. Needs `run` (its labels); with `model` σ is only
    monitored."""

    enabled: bool = True
    max_iterations: int = Field(10, ge=0)


class ExplorationValidation(Strict):
    """The lowest unique minima of each intermediate relaxed on the run's reference (thesis: 25 minima to
    0.01 eV/Å), with the bare site slab: E_ads error and RMSD of each."""

    enabled: bool = True
    n_lowest: int = Field(25, ge=1)
    fmax_eV_per_A: float = Field(0.01, gt=0)
    max_steps: int = Field(300, ge=1)


class ExplorationProtocol(ProtocolFile):
    workflow: Literal["exploration"]
    name: Identifier = Field(..., description="also the default run directory, runs/<name>")
    run: str | None = Field(None, description="a finished catalysis run directory")
    catalysis: str | None = Field(None, description="the catalysis protocol file; default <run>/protocol.yaml")
    model: MLFFFiles | None = Field(None, description="explicit model instead of the run's final one")
    intermediates: list[str] | None = Field(None, description="default: every intermediate of the run")
    starts: ExplorationStarts = ExplorationStarts()
    hopping: Hopping = Hopping()
    deduplication: Deduplication = Deduplication()
    sigma_thr_eV: float | None = Field(None, gt=0, description="the hops' active-learning threshold; minima above "
                                                               "it are counted; default: the run's")
    active_learning: ExplorationActiveLearning = ExplorationActiveLearning()
    validation: ExplorationValidation = ExplorationValidation()
    seed: int = 0

    @model_validator(mode="after")
    def _sources(self):
        if self.run is None and (self.model is None or self.catalysis is None):
            raise ValueError("give 'run' (a finished catalysis run), or 'model' and 'catalysis' (its protocol)")
        if self.intermediates is not None and len(set(self.intermediates)) != len(self.intermediates):
            raise ValueError("intermediates: a name appears twice")
        return self
