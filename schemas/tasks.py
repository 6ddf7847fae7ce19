"""Task specifications: the contract between workflows, the engine and tasks/.

Every spec is a Pydantic model with a literal `kind`; schemas/kinds.py registers each kind and derives
`TaskSpec`, the discriminated union the engine accepts. Defaults are the thesis's production values (chapter 3, appendix A) unless a comment says why
not. Units are in the field names: _eV, _A (Å), _fs, _K, _Ry, _per_A (Å⁻¹).
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from .base import Strict

# ----------------------------------------------------------------------------------------------
# Reference (labelling) calculators
# ----------------------------------------------------------------------------------------------


class SCFFallback(Strict):
    """Settings a non-converged SCF is retried with, once (engine failure class `scf`)."""

    mixing_beta: float = Field(0.2, gt=0, le=1)
    max_scf_steps: int = Field(500, gt=0)
    smearing_width_eV: float | None = Field(None, gt=0, description="wider smearing, if set")


class XTBReference(Strict):
    """GFN2-xTB through tblite: the embedded default reference (cheap, real quantum chemistry)."""

    code: Literal["xtb"] = "xtb"
    method: Literal["GFN2-xTB", "GFN1-xTB", "IPEA1-xTB"] = "GFN2-xTB"
    accuracy: float = Field(1.0, gt=0)
    electronic_temperature_K: float = Field(300.0, gt=0)
    max_iterations: int = Field(250, gt=0)
    fallback: SCFFallback = SCFFallback()
    # left out of a spec's JSON while 0: the task keys of neutral systems' labels stay what they were
    charge: int = Field(0, exclude_if=lambda v: v == 0,
                        description="total charge (e) of each structure labelled (an anion: -1)")


class EMTReference(Strict):
    """ASE's effective-medium theory (Jacobsen, Stoltze & Nørskov 1996): fitted for the fcc metals Al, Ni,
    Cu, Pd, Ag, Pt, Au (H, C, N, O only roughly). A legitimate reference for developing a protocol on a
    metal surface (adatom hops, surface MD) in seconds; its barriers are EMT's, not a DFT's."""

    code: Literal["emt"] = "emt"


class EspressoReference(Strict):
    """Quantum ESPRESSO pw.x (thesis §3.4.2: PBE, PAW, 65 Ry, 0.25 Å⁻¹ k-spacing, 0.1 eV Gaussian)."""

    code: Literal["espresso"] = "espresso"
    pseudopotentials: dict[str, str] = Field(..., description="element -> UPF file name")
    pseudo_dir: str = "/usr/share/espresso/pseudo"
    ecutwfc_Ry: float = Field(65.0, gt=0)
    ecutrho_Ry: float | None = Field(None, gt=0, description="default 8×ecutwfc for PAW/US")
    kspacing_per_A: float | None = Field(
        0.25, gt=0, description="max k-point spacing, 2π included (|b| = 2π/a, as VASP KSPACING); None = Γ only"
    )
    smearing: Literal["gaussian", "mv", "mp", "fd"] = "gaussian"
    smearing_width_eV: float = Field(0.1, gt=0)
    conv_thr_eV: float = Field(1e-7, gt=0, description="SCF energy convergence (thesis: 1e-7 eV)")
    mixing_beta: float = Field(0.7, gt=0, le=1)
    max_scf_steps: int = Field(100, gt=0)
    spin_polarised: bool = False
    extra_input: dict[str, dict[str, float | int | str | bool]] = Field(
        default_factory=dict, description="additional namelist entries, e.g. {'system': {'nosym': True}}"
    )
    executable: str = Field("pw.x", description="pw.x command after the site's launch prefix, e.g. 'pw.x -nk 4'")
    timeout_s: float | None = Field(
        None, gt=0, description="wall-clock limit of one run, killed with its processes -> transient failure; "
        "None = the site's reference_timeout_s"
    )
    fallback: SCFFallback = SCFFallback()


class CastepReference(Strict):
    """CASTEP (ASE's Castep calculator writes .cell/.param; the binary exists only on sites)."""

    code: Literal["castep"] = "castep"
    xc_functional: str = "PBE"
    cut_off_energy_eV: float = Field(884.0, gt=0, description="thesis 65 Ry = 884 eV")
    kpoint_spacing_per_A: float | None = Field(
        0.25,
        gt=0,
        description="max k-point spacing, 2π included like kspacing_per_A of QE; written as CASTEP's "
        "kpoint_mp_spacing = value/2π (CASTEP's 1/Å omit 2π); None = Γ only",
    )
    smearing_width_eV: float = Field(0.1, gt=0)
    elec_energy_tol_eV: float = Field(
        1e-7, gt=0, description="SCF total-energy tolerance; written per atom (value/N) as CASTEP expects"
    )
    mixing_beta: float = Field(0.5, gt=0, le=1)
    max_scf_steps: int = Field(100, gt=0)
    pseudopotentials: dict[str, str] = Field(default_factory=dict, description="element -> file; empty = on-the-fly")
    pseudo_dir: str | None = Field(None, description="directory of the pseudopotential files; None = PSPOT_DIR")
    extra_param: dict[str, str | float | int | bool] = Field(default_factory=dict)
    executable: str | None = Field(
        None, description="CASTEP binary; None = castep.mpi with a launch prefix, castep.serial without"
    )
    timeout_s: float | None = Field(
        None, gt=0, description="wall-clock limit of one run, killed with its processes -> transient failure; "
        "None = the site's reference_timeout_s"
    )
    fallback: SCFFallback = SCFFallback()


Reference = Annotated[
    Union[XTBReference, EMTReference, EspressoReference, CastepReference], Field(discriminator="code")
]

# ----------------------------------------------------------------------------------------------
# Machine-learning force fields
# ----------------------------------------------------------------------------------------------


class SOAPDescriptor(Strict):
    """One turbo-SOAP term of a GAP (quippy `soap_turbo`). Defaults: thesis appendix A, 4 Å term."""

    rcut_hard_A: float = Field(4.0, gt=0)
    rcut_soft_A: float = Field(3.5, gt=0)
    l_max: int = Field(4, ge=0)
    alpha_max: int = Field(8, gt=0)
    atom_sigma_r_A: float = Field(0.3, gt=0)
    atom_sigma_t_A: float = Field(0.3, gt=0)
    delta: float = Field(0.1, gt=0)
    zeta: float = Field(4.0, gt=0)
    n_sparse: int = Field(2500, gt=0, description="sparse points per central species")
    basis: Literal["poly3", "poly3gauss"] = "poly3"
    sparse_method: Literal["cur_points", "random", "uniform"] = "cur_points"

    @model_validator(mode="after")
    def _soft_inside_hard(self):
        if self.rcut_soft_A >= self.rcut_hard_A:
            raise ValueError("rcut_soft_A must be smaller than rcut_hard_A")
        return self


class TwoBodyDescriptor(Strict):
    """Optional quippy `distance_2b` term (one per species pair): a smooth pair baseline under the SOAPs."""

    cutoff_A: float = Field(5.0, gt=0)
    cutoff_transition_width_A: float = Field(1.0, gt=0)
    delta: float = Field(0.5, gt=0)
    theta_uniform_A: float = Field(1.0, gt=0)
    n_sparse: int = Field(20, gt=0)


def _thesis_soaps() -> list[SOAPDescriptor]:
    return [SOAPDescriptor(), SOAPDescriptor(rcut_hard_A=6.0, rcut_soft_A=5.5)]


class GAPModelSpec(Strict):
    """GAP fitted with quippy's gap_fit: double turbo SOAP 4 Å / 6 Å (thesis appendix A)."""

    model: Literal["gap"] = "gap"
    soap: list[SOAPDescriptor] = Field(default_factory=_thesis_soaps, min_length=1)
    # default_sigma {energy eV/atom, force eV/Å, virial, hessian}; thesis appendix A
    sigma_energy_eV: float = Field(0.001, gt=0)
    sigma_force_eV_per_A: float = Field(0.01, gt=0)
    sigma_virial_eV: float = Field(0.01, gt=0)
    sparse_jitter: float = Field(1e-8, gt=0)
    e0_method: Literal["isolated", "average"] = Field(
        "isolated", description="E0 per element from isolated_atom configs; 'average' (or none given): least squares"
    )
    distance_2b: TwoBodyDescriptor | None = None
    species_Z: list[int] | None = Field(
        None, description="elements the descriptors cover (default: those in the training set)"
    )


class MACEModelSpec(Strict):
    """MACE committee trained with mace_run_train; σ from the spread of K members (different seeds)."""

    model: Literal["mace"] = "mace"
    committee_size: int = Field(3, ge=1)
    seeds: list[int] | None = None
    r_max_A: float = Field(5.0, gt=0)
    num_interactions: int = Field(2, ge=1)
    hidden_irreps: str = "256x0e + 256x1o"
    max_L: int = Field(1, ge=0)
    correlation: int = Field(3, ge=1)
    max_num_epochs: int = Field(2000, gt=0)
    batch_size: int = Field(8, gt=0)
    lr: float = Field(1e-2, gt=0)
    energy_weight: float = Field(1.0, ge=0)
    forces_weight: float = Field(10.0, ge=0)
    stress_weight: float = Field(1.0, ge=0, description="used when the data carry REF_stress")
    valid_fraction: float = Field(0.1, gt=0, lt=1)
    max_ell: int = Field(3, ge=0, description="spherical harmonics order of the edges")
    patience: int = Field(800, gt=0, description="epochs without validation improvement before stopping")
    weight_decay: float = Field(5e-7, ge=0)
    ema_decay: float | None = Field(0.99, gt=0, lt=1, description="weight EMA (mace --ema); None = off")
    stage_two_start_epoch: int | None = Field(
        1200, gt=0, description="start of the second stage (energy-weighted); ignored past max_num_epochs"
    )
    stage_two_energy_weight: float = Field(1000.0, ge=0)
    stage_two_forces_weight: float = Field(1.0, ge=0)
    stage_two_lr: float = Field(1e-3, gt=0)
    default_dtype: Literal["float32", "float64"] = "float64"
    foundation_model: str | None = Field(None, description="path of a model file to fine-tune (chapter 4)")
    replay_file: str | None = Field(
        None, description="with foundation_model: the foundation's training data (extxyz, REF_energy/REF_forces), "
        "replayed by mace's multi-head fine-tuning; None = naive fine-tuning of all weights on the labels alone"
    )
    uncertainty: Literal["energy", "forces"] = Field(
        "energy", description="per-atom σ from committee std of atomic energies or of force components"
    )

    @model_validator(mode="after")
    def _seeds_match_committee(self):
        if self.seeds is not None:
            if len(self.seeds) != self.committee_size:
                raise ValueError(f"seeds has {len(self.seeds)} entries but committee_size is {self.committee_size}")
            if len(set(self.seeds)) != len(self.seeds):
                raise ValueError("seeds must differ between committee members")
        if self.replay_file is not None and self.foundation_model is None:
            raise ValueError("replay_file replays a foundation model's data: give foundation_model too")
        return self


class MFNModelSpec(Strict):
    """Matrix function network MFN(MACE) (thesis ch. 6): MACE layers + learnable matrix functions.

    Defaults: thesis §6.7.3 / Table 6.2 (GNL row): 2 layers, r_max 3 Å, 16 poles, 16 matrix channels,
    MACE layer with correlation 3, l_max 3, L = 1, 128 channels; E_weight 100, F_weight 1, lr 1e-2.
    """

    model: Literal["mfn"] = "mfn"
    committee_size: int = Field(1, ge=1)
    seeds: list[int] | None = None
    r_max_A: float = Field(3.0, gt=0)
    num_layers: int = Field(2, ge=1)
    channels: int = Field(128, ge=1, description="MACE node channels K of K×0e + K×1o")
    max_ell: int = Field(3, ge=1, description="spherical-harmonic degree of the MACE layer")
    correlation: int = Field(3, ge=1)
    matrix_l_max: Literal[0, 1] = Field(1, description="0: s blocks (L=0); 1: s+p 4×4 blocks (L=1)")
    matrix_channels: int = Field(16, ge=1, description="c, number of learned matrices per layer")
    n_poles: int = Field(16, ge=1, description="learnable poles z_s (each with its conjugate z_s*)")
    pole_im_min: float = Field(0.05, gt=0, description="lower bound of Im z_s (normalised spectrum units)")
    matrix_norm: Literal["batch", "layer"] = "batch"
    readout_mlp: int = Field(16, ge=1, description="hidden scalars of the last (MLP) readout")
    max_num_epochs: int = Field(4958, gt=0)
    batch_size: int = Field(5, gt=0)
    lr: float = Field(1e-2, gt=0)
    patience: int = Field(50, ge=1, description="epochs without improvement before lr × 0.8")
    energy_weight: float = Field(100.0, ge=0)
    forces_weight: float = Field(1.0, ge=0)
    default_dtype: Literal["float32", "float64"] = "float64"
    uncertainty: Literal["energy", "forces"] = "energy"

    @model_validator(mode="after")
    def _seeds_match(self):
        if self.seeds is not None and len(self.seeds) != self.committee_size:
            raise ValueError("seeds must have committee_size entries")
        return self


ModelSpec = Annotated[Union[GAPModelSpec, MACEModelSpec, MFNModelSpec], Field(discriminator="model")]


class ModelRef(Strict):
    """A trained model as tasks receive it: the files (one per committee member) and their identity."""

    model: Literal["gap", "mace", "mfn"]
    paths: list[str] = Field(..., min_length=1)
    sha256: str = Field(..., description="hash of the model files; part of every downstream task hash")
    uncertainty: Literal["energy", "forces"] = "energy"


# ----------------------------------------------------------------------------------------------
# Task specs
# ----------------------------------------------------------------------------------------------


class TaskBase(Strict):
    max_retries: int = Field(2, ge=0, description="retries of transient failures (node loss, walltime)")


class SinglePointSpec(TaskBase):
    """Reference energy, forces (and stress for periodic cells) of one structure."""

    kind: Literal["singlepoint"] = "singlepoint"
    reference: Reference = XTBReference()
    max_force_eV_per_A: float = Field(50.0, gt=0, description="larger forces are unphysical: discarded")
    use_fallback: bool = Field(
        False, description="run with the reference's SCF fallback settings; the engine sets it on the one SCF retry"
    )
    reference_timeout_s: float | None = Field(
        None, gt=0, description="wall-clock limit of one pw.x/CASTEP run; exceeded -> transient failure"
    )


class MDSpec(TaskBase):
    """MLFF MD segment stopped at the first per-atom σ > σ_thr (thesis §3.2)."""

    kind: Literal["md"] = "md"
    model: ModelRef
    ensemble: Literal["nvt-langevin", "nve"] = "nvt-langevin"
    temperature_K: float = Field(300.0, gt=0)
    timestep_fs: float = Field(1.0, gt=0)
    steps: int = Field(10000, gt=0, description="thesis: 10 ps bulk/surface, 1 ps adsorbates")
    friction_per_fs: float = Field(0.01, gt=0)
    sigma_thr_eV: float = Field(0.05, gt=0, description="σ_thr, thesis §3.2: 50 meV")
    check_every: int = Field(1, ge=1, description="evaluate σ every n steps")
    seed: int = 0
    fixed_atoms: list[int] = Field(default_factory=list)


class OptimiseSpec(TaskBase):
    """Geometry optimisation on the MLFF (block 5) or, with `reference` instead, on the reference (the
    validation relaxes reaction endpoints to reference minima before its NEB)."""

    kind: Literal["optimise"] = "optimise"
    model: ModelRef | None = None
    reference: Reference | None = None
    fmax_eV_per_A: float = Field(0.001, gt=0, description="thesis: 0.001 eV/Å with the MLFF")
    max_steps: int = Field(1000, gt=0)
    optimizer: Literal["BFGS", "FIRE", "LBFGS"] = "BFGS"
    fixed_atoms: list[int] = Field(default_factory=list)
    sigma_thr_eV: float = Field(0.05, gt=0, description="σ along the trajectory is reported against this")
    stop_on_breach: bool = Field(
        False, description="stop at the first per-atom σ > σ_thr (default: run to the MLFF minimum, thesis block 5)"
    )

    @model_validator(mode="after")
    def _one_potential(self):
        if (self.model is None) == (self.reference is None):
            raise ValueError("optimise: give exactly one of 'model' (MLFF) or 'reference'")
        return self


class NEBSpec(TaskBase):
    """ASE NEB between two endpoints (thesis §3.4.2: IDPP start, CI, spline + Exp preconditioner).

    With `model` the band moves on the MLFF; with `reference` instead it is a reference NEB (the
    validation of thesis §3.4.1, usually started from the MLFF's converged band)."""

    kind: Literal["neb"] = "neb"
    model: ModelRef | None = None
    reference: Reference | None = None
    n_images: int = Field(10, ge=1, description="intermediate images (endpoints excluded)")
    interpolation: Literal["idpp", "linear"] = "idpp"
    # left out of a spec's JSON while 0: the task keys of earlier runs' bands stay what they were
    rattle_A: float = Field(
        0.0, ge=0, exclude_if=lambda v: v == 0,
        description="Gaussian displacement (Å, seeded) of the interpolated images' free atoms: a band between "
        "two planar conformers keeps their mirror plane, so its path stays in the plane and climbs to the "
        "in-plane saddle rather than the torsion's (a hydroxyl turned by 180°); a small rattle breaks that")
    climb: bool = True
    method: Literal["aseneb", "improvedtangent", "eb", "spline", "string"] = "improvedtangent"
    precon: Literal["Exp"] | None = None
    optimizer: Literal["FIRE", "BFGS", "LBFGS"] = Field(
        "FIRE", description="band optimiser without precon (with precon: ASE's NEBOptimizer, ODE12r)"
    )
    spring_k_eV_per_A2: float = Field(0.1, gt=0)
    fmax_eV_per_A: float = Field(0.01, gt=0, description="thesis: 0.01 eV/Å with the MLFF")
    climb_start_fmax_eV_per_A: float = Field(
        0.05, gt=0, description="with climb: relax without climbing image to this fmax first (thesis §3.3)"
    )
    max_steps: int = Field(1000, gt=0, description="optimiser steps, both stages together")
    fixed_atoms: list[int] = Field(default_factory=list)
    sigma_thr_eV: float = Field(0.05, gt=0)

    @model_validator(mode="after")
    def _precon_needs_spline(self):
        if self.precon is not None and self.method not in ("spline", "string"):
            raise ValueError("precon='Exp' requires method='spline' or 'string' (ASE NEB)")
        if (self.model is None) == (self.reference is None):
            raise ValueError("neb: give exactly one of 'model' (MLFF NEB) or 'reference' (reference NEB)")
        return self


class MinimaHoppingSpec(TaskBase):
    """ase.optimize.minimahopping (Goedecker) with the MLFF."""

    kind: Literal["minimahopping"] = "minimahopping"
    model: ModelRef
    T0_K: float = Field(1000.0, gt=0)
    Ediff0_eV: float = Field(0.5, gt=0)
    mdmin: int = Field(2, ge=1)
    fmax_eV_per_A: float = Field(0.05, gt=0)
    timestep_fs: float = Field(1.0, gt=0)
    n_minima: int = Field(10, ge=1, description="stop once this many distinct minima are recorded")
    max_hops: int = Field(100, ge=1, description="stop after this many MD + optimisation hops in any case")
    max_optimisation_steps: int = Field(1000, ge=1, description="cap on each local relaxation of a hop")
    fixed_atoms: list[int] = Field(default_factory=list)
    sigma_thr_eV: float | None = Field(None, gt=0, description="stop at the first evaluation (MD or relaxation) "
                                                               "whose per-atom σ exceeds it and return it to label")
    seed: int = 0


class UmbrellaWindowSpec(TaskBase):
    """One umbrella-sampling window: MD with a harmonic restraint on ξ = d(i, j) (`distance`) or
    ξ = d(i, j) − d(j, k) (`distance_difference`: j moving from i to k)."""

    kind: Literal["umbrellawindow"] = "umbrellawindow"
    model: ModelRef
    cv: Literal["distance", "distance_difference"] = "distance"
    atom_i: int = Field(..., ge=0)
    atom_j: int = Field(..., ge=0)
    atom_k: int | None = Field(None, ge=0, description="the third atom of distance_difference")
    centre_A: float = Field(..., description="ξ at the window's centre (Å; a distance is positive)")
    spring_eV_per_A2: float = Field(75.0, gt=0, description="thesis §3.4.2: 75 eV/Å²")
    temperature_K: float = Field(300.0, gt=0)
    timestep_fs: float = Field(1.0, gt=0)
    equilibration_steps: int = Field(10000, ge=0, description="thesis: 10 ps")
    production_steps: int = Field(110000, gt=0, description="thesis: 110 ps")
    sample_every: int = Field(1, ge=1)
    friction_per_fs: float = Field(0.01, gt=0)
    fixed_atoms: list[int] = Field(default_factory=list)
    seed: int = 0
    sigma_thr_eV: float | None = Field(
        None, gt=0, description="production frames whose largest per-atom σ exceeds this are returned as breaching")
    max_breaching_frames: int = Field(3, ge=1, description="the window stops once it holds this many")
    breach_spacing_steps: int = Field(100, ge=1, description="breaching frames kept at least this many steps apart")

    @model_validator(mode="after")
    def _atoms(self):
        if self.atom_i == self.atom_j:
            raise ValueError("atom_i and atom_j must be different atoms")
        if self.cv == "distance":
            if self.atom_k is not None:
                raise ValueError("atom_k belongs to distance_difference, not distance")
            if self.centre_A <= 0:
                raise ValueError(f"centre_A: a distance is positive, got {self.centre_A}")
        elif self.atom_k is None or self.atom_k in (self.atom_i, self.atom_j):
            raise ValueError("distance_difference needs atom_k, different from atom_i and atom_j")
        return self


class NMRShieldingSpec(TaskBase):
    """Magnetic shielding (and EFG) tensors: CASTEP magres or QE-GIPAW (periodic cells), NWChem GIAO
    (molecules and clusters, all-electron Gaussian basis), or a precomputed .magres."""

    kind: Literal["nmrshielding"] = "nmrshielding"
    code: Literal["castep", "qe-gipaw", "nwchem", "precomputed"] = "castep"
    xc_functional: str = Field("PBE", description="CASTEP / QE-GIPAW functional (NWChem: `method`)")
    method: str = Field(
        "B3LYP", description="NWChem: 'HF' (task scf) or an NWChem dft xc name, e.g. B3LYP, PBE0, PBE"
    )
    basis: str = Field(
        "pcS-1", description="NWChem: basis library name for every element (/usr/share/nwchem/libraries); "
                             "pcS-n are Jensen's shielding sets, pcS-2 converges 17O σ_iso to ~1 ppm"
    )
    charge: int = Field(0, description="NWChem: total charge of the molecule or cluster")
    multiplicity: int = Field(1, ge=1, description="NWChem: spin multiplicity 2S+1")
    cut_off_energy_eV: float = Field(884.0, gt=0, description="plane-wave cut-off (QE-GIPAW: ecutwfc)")
    ecutrho_eV: float | None = Field(None, gt=0, description="QE-GIPAW charge cut-off; None = 4×cut-off (NC)")
    kpoint_spacing_per_A: float | None = Field(
        0.25, gt=0, description="max k-point spacing, 2π included; written as an explicit MP grid; None = Γ"
    )
    elec_energy_tol_eV: float = Field(1e-7, gt=0, description="SCF total-energy tolerance")
    max_scf_steps: int = Field(100, gt=0)
    efg: bool = True
    pseudopotentials: dict[str, str] = Field(
        default_factory=dict, description="element -> file; CASTEP: empty = on-the-fly; QE-GIPAW: required"
    )
    pseudo_dir: str | None = Field(None, description="directory of the pseudopotentials (CASTEP PSPOT_DIR)")
    executable: str | None = Field(
        None, description="castep.mpi/castep.serial (by launch prefix), gipaw.x or nwchem when None"
    )
    pw_executable: str = Field("pw.x", description="QE-GIPAW: the SCF before gipaw.x")
    q_gipaw: float = Field(0.01, gt=0, description="QE-GIPAW small-q for the induced current (bohr⁻¹)")
    extra_param: dict[str, str | float | int | bool] = Field(default_factory=dict, description="CASTEP .param")
    extra_input: dict[str, dict[str, float | int | str | bool]] = Field(
        default_factory=dict, description="QE-GIPAW pw.x namelist entries"
    )
    timeout_s: float | None = Field(None, gt=0, description="per launched code")
    magres_file: str | None = Field(None, description="precomputed .magres (code='precomputed')")

    @model_validator(mode="after")
    def _precomputed_needs_file(self):
        if self.code == "precomputed" and not self.magres_file:
            raise ValueError("code='precomputed' needs magres_file")
        return self


# config_type of the single atoms that give the E0s: MACE's name, so a run's dataset.xyz trains as it is;
# "isolated_atom", the earlier spelling, is still read (labels.db of earlier runs)
ISOLATED_ATOM = "IsolatedAtom"
ISOLATED_ATOM_TYPES = frozenset({ISOLATED_ATOM, "isolated_atom"})


class TrainSpec(TaskBase):
    """Fit an MLFF to the labelled structures passed in (info REF_energy, arrays REF_forces, info
    REF_stress, and per-config weights info energy_weight/force_weight). Single atoms with info
    config_type="IsolatedAtom" (or "isolated_atom") give the per-element E0s; they are not fitted. device "auto" = the
    site's device for the train executor."""

    kind: Literal["train"] = "train"
    model: ModelSpec = GAPModelSpec()
    device: Literal["cpu", "cuda", "auto"] = "auto"
    seed: int = 0


class EvaluateSpec(TaskBase):
    """The MLFF's energy, forces and per-atom σ of each structure passed in (no dynamics): what the
    report's parity plot and the NMR populations need. Forces as ASE's get_forces gives them: zero on
    atoms a structure's FixAtoms constraint holds, like the reference labels."""

    kind: Literal["evaluate"] = "evaluate"
    model: ModelRef


class ProbeSpec(TaskBase):
    """Computes nothing: answers where it ran. What one task costs the engine (benchmarks/engine.py), and
    whether a site's executor for `resource` starts and runs work."""

    kind: Literal["probe"] = "probe"
    resource: Literal["reference", "mlff", "training", "training_cpu"] = "mlff"
    tag: int = Field(0, description="distinguishes otherwise identical probes (each is its own task)")


class VibrationsSpec(TaskBase):
    """Harmonic normal modes of one structure with the MLFF: ase.vibrations.Vibrations (finite
    differences) displacing `indices` (all atoms when None) by ±delta_A; used for the Vineyard
    prefactor and harmonic populations of thesis §5.3.2."""

    kind: Literal["vibrations"] = "vibrations"
    model: ModelRef
    indices: list[int] | None = Field(None, description="atoms displaced; None = all")
    delta_A: float = Field(0.01, gt=0, description="finite-difference displacement")
    nfree: Literal[2, 4] = Field(2, description="displacements per coordinate (ASE Vibrations nfree)")
