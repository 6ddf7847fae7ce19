"""Task specifications: the contract between workflows, the engine and tasks/.

Every spec is a Pydantic model with a literal `kind`; `TaskSpec` is the discriminated union the engine
accepts. Defaults are the thesis's production values (chapter 3, appendix A) unless a comment says why
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


class EMTReference(Strict):
    """ASE's effective-medium theory: fast tests only, never a production reference."""

    code: Literal["emt"] = "emt"


class EspressoReference(Strict):
    """Quantum ESPRESSO pw.x (thesis §3.4.2: PBE, PAW, 65 Ry, 0.25 Å⁻¹ k-spacing, 0.1 eV Gaussian)."""

    code: Literal["espresso"] = "espresso"
    pseudopotentials: dict[str, str] = Field(..., description="element -> UPF file name")
    pseudo_dir: str = "/usr/share/espresso/pseudo"
    ecutwfc_Ry: float = Field(65.0, gt=0)
    ecutrho_Ry: float | None = Field(None, gt=0, description="default 8×ecutwfc for PAW/US")
    kspacing_per_A: float | None = Field(0.25, gt=0, description="max k-point spacing; None = Γ only")
    smearing: Literal["gaussian", "mv", "mp", "fd"] = "gaussian"
    smearing_width_eV: float = Field(0.1, gt=0)
    conv_thr_eV: float = Field(1e-7, gt=0, description="SCF energy convergence (thesis: 1e-7 eV)")
    mixing_beta: float = Field(0.7, gt=0, le=1)
    max_scf_steps: int = Field(100, gt=0)
    spin_polarised: bool = False
    extra_input: dict[str, dict[str, float | int | str | bool]] = Field(
        default_factory=dict, description="additional namelist entries, e.g. {'system': {'nosym': True}}"
    )
    fallback: SCFFallback = SCFFallback()


class CastepReference(Strict):
    """CASTEP (ASE's Castep calculator writes .cell/.param; the binary exists only on sites)."""

    code: Literal["castep"] = "castep"
    xc_functional: str = "PBE"
    cut_off_energy_eV: float = Field(884.0, gt=0, description="thesis 65 Ry = 884 eV")
    kpoint_spacing_per_A: float | None = Field(0.25, gt=0, description="CASTEP kpoints_mp_spacing in 1/Å")
    smearing_width_eV: float = Field(0.1, gt=0)
    elec_energy_tol_eV: float = Field(1e-7, gt=0)
    mixing_beta: float = Field(0.5, gt=0, le=1)
    max_scf_steps: int = Field(100, gt=0)
    pseudopotentials: dict[str, str] = Field(default_factory=dict, description="element -> file; empty = on-the-fly")
    extra_param: dict[str, str | float | int | bool] = Field(default_factory=dict)
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
    n_sparse: int = Field(2500, gt=0)


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
    e0_method: Literal["isolated", "average"] = "isolated"


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
    energy_weight: float = 1.0
    forces_weight: float = 10.0
    default_dtype: Literal["float32", "float64"] = "float64"
    foundation_model: str | None = Field(None, description="path of a model file to fine-tune (chapter 4)")
    uncertainty: Literal["energy", "forces"] = Field(
        "energy", description="per-atom σ from committee std of atomic energies or of force components"
    )


ModelSpec = Annotated[Union[GAPModelSpec, MACEModelSpec], Field(discriminator="model")]


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
    kind: Literal["optimise"] = "optimise"
    model: ModelRef
    fmax_eV_per_A: float = Field(0.001, gt=0, description="thesis: 0.001 eV/Å with the MLFF")
    max_steps: int = Field(1000, gt=0)
    optimizer: Literal["BFGS", "FIRE", "LBFGS"] = "BFGS"
    fixed_atoms: list[int] = Field(default_factory=list)
    sigma_thr_eV: float = Field(0.05, gt=0, description="σ along the trajectory is reported against this")


class NEBSpec(TaskBase):
    """ASE NEB between two endpoints (thesis §3.4.2: IDPP start, CI, spline + Exp preconditioner)."""

    kind: Literal["neb"] = "neb"
    model: ModelRef
    n_images: int = Field(10, ge=1, description="intermediate images (endpoints excluded)")
    interpolation: Literal["idpp", "linear"] = "idpp"
    climb: bool = True
    method: Literal["aseneb", "improvedtangent", "eb", "spline", "string"] = "improvedtangent"
    precon: Literal["Exp"] | None = None
    spring_k_eV_per_A2: float = Field(0.1, gt=0)
    fmax_eV_per_A: float = Field(0.01, gt=0, description="thesis: 0.01 eV/Å with the MLFF")
    max_steps: int = Field(1000, gt=0)
    fixed_atoms: list[int] = Field(default_factory=list)
    sigma_thr_eV: float = Field(0.05, gt=0)

    @model_validator(mode="after")
    def _precon_needs_spline(self):
        if self.precon is not None and self.method not in ("spline", "string"):
            raise ValueError("precon='Exp' requires method='spline' or 'string' (ASE NEB)")
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
    n_minima: int = Field(10, ge=1, description="stop after this many minima were visited")
    fixed_atoms: list[int] = Field(default_factory=list)
    seed: int = 0


class UmbrellaWindowSpec(TaskBase):
    """One umbrella-sampling window: MD with a harmonic restraint on the distance d(i, j)."""

    kind: Literal["umbrellawindow"] = "umbrellawindow"
    model: ModelRef
    atom_i: int = Field(..., ge=0)
    atom_j: int = Field(..., ge=0)
    centre_A: float = Field(..., gt=0)
    spring_eV_per_A2: float = Field(75.0, gt=0, description="thesis §3.4.2: 75 eV/Å²")
    temperature_K: float = Field(300.0, gt=0)
    timestep_fs: float = Field(1.0, gt=0)
    equilibration_steps: int = Field(10000, ge=0, description="thesis: 10 ps")
    production_steps: int = Field(110000, gt=0, description="thesis: 110 ps")
    sample_every: int = Field(1, ge=1)
    friction_per_fs: float = Field(0.01, gt=0)
    fixed_atoms: list[int] = Field(default_factory=list)
    seed: int = 0


class NMRShieldingSpec(TaskBase):
    """Magnetic shielding (and EFG) tensors: CASTEP magres or QE-GIPAW, or a precomputed .magres."""

    kind: Literal["nmrshielding"] = "nmrshielding"
    code: Literal["castep", "qe-gipaw", "precomputed"] = "castep"
    xc_functional: str = "PBE"
    cut_off_energy_eV: float = Field(884.0, gt=0)
    kpoint_spacing_per_A: float | None = Field(0.25, gt=0)
    efg: bool = True
    magres_file: str | None = Field(None, description="precomputed .magres (code='precomputed')")


class TrainSpec(TaskBase):
    """Fit an MLFF to the labelled structures passed in (info REF_energy, arrays REF_forces, info
    REF_stress, and per-config weights info energy_weight/force_weight)."""

    kind: Literal["train"] = "train"
    model: ModelSpec = GAPModelSpec()
    device: Literal["cpu", "cuda", "auto"] = "auto"
    seed: int = 0


TaskSpec = Annotated[
    Union[
        SinglePointSpec,
        MDSpec,
        OptimiseSpec,
        NEBSpec,
        MinimaHoppingSpec,
        UmbrellaWindowSpec,
        NMRShieldingSpec,
        TrainSpec,
    ],
    Field(discriminator="kind"),
]

TASK_KINDS = (
    "singlepoint",
    "md",
    "optimise",
    "neb",
    "minimahopping",
    "umbrellawindow",
    "nmrshielding",
    "train",
)
