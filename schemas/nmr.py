"""The NMR protocol (thesis chapter 5, §5.3): dynamic ¹⁷O (or other) NMR spectra across time-scales.

Either explore with the MLFF (structure + model: minima hopping → NVT MD per minimum → shielding tasks) or
give precomputed magres files per minimum (static structure, optionally MD samples): shielding needs
CASTEP or QE-GIPAW, which run only on sites that have them. Rates come from NEB + vibrational analysis
with the MLFF, or are given. Relative file paths resolve against the protocol file's folder.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Identifier, Strict
from .loading import ProtocolFile
from .tasks import GAPModelSpec, ModelSpec, NMRShieldingSpec, Reference, XTBReference


class MLFFFiles(Strict):
    """A trained MLFF: its files (one per committee member)."""

    model: Literal["gap", "mace"]
    paths: list[str] = Field(..., min_length=1)
    uncertainty: Literal["energy", "forces"] = "energy"


class NMRExploration(Strict):
    """§5.3.1 minima hopping (ase.optimize.minimahopping) with the MLFF; minima de-duplicated by SOAP.

    With `train:` the model learns on the way (thesis §3.4.3, workflows/hopping.py): a search whose MD or
    relaxation exceeds σ_thr stops there, that configuration is labelled with train.reference, the model
    refitted and the search continued from its last minimum, at most `learning_rounds` times; the last
    round hops to the end and counts whether σ still went above σ_thr. With `model:` σ is only monitored."""

    T0_K: float = Field(1000.0, gt=0)
    Ediff0_eV: float = Field(0.5, gt=0)
    mdmin: int = Field(2, ge=1)
    fmax_eV_per_A: float = Field(0.05, gt=0)
    timestep_fs: float = Field(1.0, gt=0)
    n_minima: int = Field(10, ge=1, description="minima hopping stops once this many minima are recorded")
    max_hops: int = Field(100, ge=1)
    seed: int = 0
    soap_distance: float = Field(
        0.05, gt=0, description="two minima are the same if every atom's SOAP distance √(2−2k) is below this "
        "(per atom, not averaged: a group rotation that swaps two sites' environments is a distinct minimum)"
    )
    energy_window_eV: float = Field(0.5, gt=0, description="keep minima within this window above the lowest")
    max_minima: int = Field(4, ge=1, description="keep at most this many (lowest) minima; NEBs grow as n²")
    max_optimisation_steps: int = Field(1000, ge=1, description="cap on each local relaxation of a hop")
    sigma_thr_eV: float | None = Field(None, gt=0, description="σ_thr of the hops (default: train.sigma_thr_eV, "
                                                               "else 0.05 eV, monitored only)")
    learning_rounds: int = Field(10, ge=0, description="with train: refits on breaching configurations at most "
                                                       "(0: σ only monitored)")


class NMRSampling(Strict):
    """NVT MD per minimum with the MLFF; n_samples configurations, evenly spaced, go to shielding tasks."""

    temperature_K: float = Field(300.0, gt=0)
    timestep_fs: float = Field(0.5, gt=0)
    steps: int = Field(2000, gt=0, description="steps per minimum (all samples together)")
    n_samples: int = Field(10, ge=0, description="0 = no fast-regime averaging (panels C, D omitted)")
    friction_per_fs: float = Field(0.01, gt=0)
    sigma_thr_eV: float = Field(0.2, gt=0, description="MD segments stop above this per-atom σ (reported)")
    seed: int = 0


class NMRRates(Strict):
    """Rates between minima: CI-NEB + harmonic TST with the Vineyard prefactor (ASE Vibrations)."""

    temperature_K: float = Field(300.0, gt=0)
    n_images: int = Field(7, ge=1)
    fmax_eV_per_A: float = Field(0.05, gt=0)
    max_steps: int = Field(500, gt=0)
    vibration_atoms: list[int] | None = Field(
        None, description="atoms displaced in the vibrational analysis (None = all unfixed atoms)"
    )
    vibration_delta_A: float = Field(0.01, gt=0)
    neb_rattle_A: float = Field(
        0.05, ge=0, description="displacement of the NEB's interpolated images (NEBSpec.rattle_A): between planar "
        "conformers the interpolated band keeps their mirror plane and finds the in-plane saddle, not the torsion's"
    )
    n_zero_modes: int = Field(0, ge=0, description="translation/rotation modes to drop (6 for a free molecule)")
    rates_Hz: list[tuple[int, int, float]] | None = Field(
        None, description="given rates [i, j, k_i→j] instead of NEB (minima in protocol order), one direction "
        "per pair; the reverse follows from detailed balance"
    )
    populations: list[float] | None = Field(
        None, description="equilibrium populations of the minima with given rates (None: Boltzmann factors of "
        "the MLFF energies, or equal without a model)"
    )


class NMRSpectrumSettings(Strict):
    """Acquisition and the observed nucleus (the thesis: ¹⁷O, 23.5 T, 20 kHz MAS)."""

    isotope: str = "17O"
    element: str = "O"
    sigma_ref_ppm: float = Field(..., description="σ_ref of δ = σ_ref − σ for this nucleus and method")
    nuclei: list[int] | None = Field(None, description="atom indices observed (None = every atom of element)")
    field_T: float = Field(23.5, gt=0)
    mas: bool = True
    spin_rate_Hz: float = Field(20_000.0, gt=0, description="MAS rate (thesis: 20 kHz); exchange is propagated over "
                                                            "the rotor period, with sidebands, unless the "
                                                            "infinite-speed limit holds (tasks/nmr/rotor.py)")
    fwhm_Hz: float = Field(300.0, gt=0, description="Lorentzian broadening")
    ppm_min: float = -100.0
    ppm_max: float = 400.0
    n_points: int = Field(4096, ge=64)
    orientation_scheme: Literal["zcw", "lebedev"] = "zcw"
    n_orientations: int = Field(2000, ge=13, description="ZCW: at least this many; Lebedev: rule degree")
    experimental: str | None = Field(None, description="two-column file (ppm, intensity)")
    score_window_ppm: tuple[float, float] | None = Field(None, description="ppm range scored against experiment")

    @model_validator(mode="after")
    def _isotope_known(self):
        # nuclear data (γ, spin, Q) come from soprano's table: an isotope it lacks fails here, not mid-run
        from reactforge.tasks.nmr.tensors import isotope_data

        data = isotope_data(self.isotope)
        if data.element != self.element:
            raise ValueError(f"isotope {self.isotope} is not of element {self.element!r}")
        return self


class NMRTraining(Strict):
    """The MLFF trained here on the start structure with the reference, by thesis §3.2's MD loop: isolated
    atoms (E0s) and rattled copies of the structure labelled, then MD at each temperature in turn stopped
    at the first per-atom σ > σ_thr, that configuration labelled and the model refitted, until a full run
    stays below σ_thr (a clean run contributes its highest-σ frame while others breach)."""

    reference: Reference = XTBReference()
    model: ModelSpec = GAPModelSpec()
    n_rattled: int = Field(8, ge=1, description="rattled copies of the start structure labelled first")
    rattle_sigma_A: float = Field(0.05, gt=0)
    isolated_box_A: float = Field(12.0, gt=0, description="box edge of the isolated atoms (E0s)")
    temperatures_K: list[float] = Field(default_factory=lambda: [300.0, 600.0], min_length=1)
    md_steps: int = Field(1000, ge=1)
    timestep_fs: float = Field(0.5, gt=0)
    sigma_thr_eV: float = Field(0.05, gt=0)
    max_iterations: int = Field(8, ge=1, description="MD rounds per temperature")
    max_force_eV_per_A: float = Field(
        50.0, gt=0, description="labels with a larger reference force are discarded as unphysical (also those of "
        "the hops' breaches): a molecule's MLFF that is too soft where a bond is compressed needs those labels")
    seed: int = Field(0, ge=0)


class PrecomputedMinimum(Strict):
    """One minimum given as magres files: its structure (static) and, optionally, MD samples."""

    static: str = Field(..., description=".magres of the minimum structure")
    samples: list[str] = Field(default_factory=list, description=".magres files of MD samples")


class NMRProtocol(ProtocolFile):
    workflow: Literal["nmr"]
    name: Identifier = Field(..., description="also the default run directory, runs/<name>")
    model: MLFFFiles | None = None
    train: NMRTraining | None = Field(None, description="train the MLFF here on the structure instead of 'model'")
    structure: str | None = Field(None, description="start structure (ASE-readable)")
    fixed_atoms: list[int] = Field(default_factory=list)
    precomputed: list[PrecomputedMinimum] | None = Field(None, description="minima as magres files; no exploration")
    exploration: NMRExploration = NMRExploration()
    sampling: NMRSampling = NMRSampling()
    shielding: NMRShieldingSpec = NMRShieldingSpec()
    rates: NMRRates = NMRRates()
    spectrum: NMRSpectrumSettings

    @model_validator(mode="after")
    def _sources(self):
        if self.model is not None and self.train is not None:
            raise ValueError("give 'model' (a trained MLFF) or 'train' (train one here), not both")
        charge = getattr(self.train.reference, "charge", None) if self.train is not None else None
        if charge is not None and self.shielding.code == "nwchem" and charge != self.shielding.charge:
            raise ValueError(f"train.reference.charge {charge} and shielding.charge {self.shielding.charge} "
                             "differ: the MLFF and the shielding calculations must see the same molecule")
        if self.precomputed is None:
            if self.structure is None or (self.model is None and self.train is None):
                raise ValueError("give 'structure' and 'model' or 'train' (exploration), or 'precomputed' magres files")
            if self.shielding.code == "precomputed":
                raise ValueError("shielding.code 'precomputed' needs the 'precomputed' list of magres files")
        elif not self.precomputed:
            raise ValueError("precomputed: list at least one minimum")
        n = len(self.precomputed) if self.precomputed else None
        if n and n > 1 and self.model is None and self.rates.rates_Hz is None:
            raise ValueError("rates between precomputed minima need 'model' (NEB) or rates.rates_Hz")
        if self.rates.rates_Hz and n:
            pairs = set()
            for i, j, k in self.rates.rates_Hz:
                if not (0 <= i < n and 0 <= j < n) or i == j or k < 0:
                    raise ValueError(f"rates.rates_Hz: bad entry [{i}, {j}, {k}] for {n} minima")
                if frozenset((i, j)) in pairs:
                    raise ValueError(f"rates.rates_Hz: pair ({i}, {j}) given twice; give one direction per pair")
                pairs.add(frozenset((i, j)))
        pops = self.rates.populations
        if pops is not None and (n is None or len(pops) != n or min(pops) <= 0):
            raise ValueError("rates.populations: one positive number per precomputed minimum")
        return self
