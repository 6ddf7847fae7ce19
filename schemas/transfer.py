"""The transfer protocol (thesis §3.5, Fig. 3.9): a MACE trained on a finished catalysis run's labels, the data
its GAP was fitted on, with no new data, and its barriers and adsorption energies set against the reference
beside the run's final GAP; optionally the training set augmented with configurations in which the metal atom
nearest the active site is replaced by a dopant.

What is compared (both models alike, against the run's reference):
- barriers: per validated reaction, a climbing-image NEB with the model started from the run's reference band
  (paths/<reaction>.validation.xyz, the run's block-6 NEB settings) and the model's energies on the reference
  band's images as they are (single points); both against the validation's reference barrier.
- adsorption energies: E_ads = E(slab + adsorbate) − E(site slab) − Σ n_el μ_el for each intermediate at the
  end of a validated band (relaxed on the reference by the run's validation). A model's E_ads uses its own
  energies: the intermediate and the bare site slab each relaxed with the model from the reference minimum
  (the run's block-5 settings); the reference's use the reference minima (the site slab relaxed on the
  reference here). The gas-phase μ are the reference's for both: a surface model is not trained on isolated
  molecules (thesis Table A.1 has none), so the error is that of E(slab + adsorbate) − E(site slab). μ come
  from the run's summary, else from its gas references relaxed on the reference here.

The MACE is trained on the labels the run's final GAP was fitted on (its models/<block>-<iteration> folder
names the last block and iteration it saw). Relative file names resolve against the protocol file's folder.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import Identifier, Strict
from .loading import ProtocolFile
from .tasks import MACEModelSpec


class TransferDopant(Strict):
    """Augmentation with a dopant (thesis §3.5: sixty configurations of the vacancy's training set with the In
    nearest the active site replaced by Pt, rattled). `configurations` labelled frames of the run that hold its
    site slab are chosen by farthest-point sampling of their average SOAP (from a seeded first frame); in each,
    the metal atom of the slab nearest the active site (minimum image; a site_index site that is a metal atom
    is that atom) becomes `element` and every atom is displaced by a Gaussian of `rattle_A`. They are labelled
    with the run's reference (a failed calculation is discarded, never a label); `held_out_fraction` of them
    are kept out of every fit, and two MACE fits, without and with the others, are scored on them.

    The thesis's text says the configurations were rattled by 1 Å; on every atom that puts pairs of atoms
    within a few tenths of an Å, whose labels the force bound discards, so the default is 0.1 Å."""

    element: str = Field(..., description="chemical symbol of the dopant, e.g. Pt, Cu, Ga")
    configurations: int = Field(60, ge=2, description="doped configurations labelled (thesis: 60)")
    held_out_fraction: float = Field(0.25, gt=0, lt=1, description="of them, kept out of every fit (at least 1)")
    rattle_A: float = Field(0.1, ge=0, description="standard deviation of the Gaussian displacement of every atom")
    seed: int = 0

    @field_validator("element")
    @classmethod
    def _element(cls, value: str) -> str:
        from ase.data import chemical_symbols

        if value not in chemical_symbols[1:]:
            raise ValueError(f"{value!r} is not a chemical element symbol (e.g. 'Pt', 'Cu', 'Ga')")
        return value


class TransferEvaluation(Strict):
    """How the models' NEBs and relaxations run; a field left out is the run's own setting (block 6's NEB,
    block 5's relaxation). A NEB starts from the reference band, so a model that agrees with the reference
    needs few steps; one that stops at `neb_max_steps` is reported as not converged."""

    neb_fmax_eV_per_A: float | None = Field(None, gt=0)
    neb_max_steps: int | None = Field(None, ge=1)
    relax_fmax_eV_per_A: float | None = Field(None, gt=0)
    relax_max_steps: int | None = Field(None, ge=1)


class TransferProtocol(ProtocolFile):
    workflow: Literal["transfer"]
    name: Identifier = Field(..., description="also the default run directory, runs/<name>")
    run: str = Field(..., description="a finished catalysis run directory (labels, final GAP, validation)")
    mace: MACEModelSpec = Field(MACEModelSpec(), description="the MACE trained on the run's labels; a committee "
                                                             "when committee_size > 1 (its mean is evaluated)")
    evaluation: TransferEvaluation = TransferEvaluation()
    dopant: TransferDopant | None = Field(None, description="augmentation with a dopant near the site; off if absent")
    max_force_eV_per_A: float = Field(50.0, gt=0, description="doped labels with larger reference forces are "
                                                              "discarded")
    seed: int = 0
