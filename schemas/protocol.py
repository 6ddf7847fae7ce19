"""The catalysis protocol a user writes (thesis chapter 3): one YAML, validated here.

It names the bulk, the surface, the active site, the approximate intermediates, the reactions, the
reference and the model, σ_thr, and each active-learning block's parameters and termination criterion.
Defaults are the thesis's production values (§3.3, §3.4.2, appendix A). Units are in the field names:
_eV, _A (Å), _fs, _K, _eV_per_A (eV/Å). Relative file paths are resolved against the protocol file's
folder by `load_protocol`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from .base import Identifier, Strict
from .loading import ProtocolFile
from .loading import load_protocol as _load
from .tasks import GAPModelSpec, ModelSpec, Reference, XTBReference

Vec3 = tuple[float, float, float]

# ----------------------------------------------------------------------------------------------
# Structures
# ----------------------------------------------------------------------------------------------


class BulkSpec(Strict):
    """The bulk crystal: a structure file (e.g. a Materials Project CIF) or ase.build.bulk arguments."""

    file: str | None = Field(None, description="structure file readable by ase.io.read (CIF, extxyz, POSCAR)")
    name: str | None = Field(None, description="ase.build.bulk name, e.g. 'MgO' or 'Pt'")
    crystalstructure: str | None = Field(None, description="ase.build.bulk crystalstructure, e.g. 'rocksalt'")
    a_A: float | None = Field(None, gt=0, description="lattice constant a")
    c_A: float | None = Field(None, gt=0, description="lattice constant c (hcp, wurtzite)")
    cubic: bool = Field(True, description="conventional cubic cell (ase.build.bulk cubic=True)")
    repeat: tuple[int, int, int] = Field((1, 1, 1), description="supercell of the bulk used for blocks 0-1")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.file is None) == (self.name is None):
            raise ValueError("bulk: give exactly one of 'file' or 'name' (an ase.build.bulk builder)")
        if any(n < 1 for n in self.repeat):
            raise ValueError("bulk.repeat: every entry must be >= 1")
        return self


class SurfaceSpec(Strict):
    """The slab cut from the bulk with ase.build.surface; or a slab file the user supplies."""

    file: str | None = Field(None, description="slab file; if set, miller/layers/size are not used")
    miller: tuple[int, int, int] = Field(
        (1, 1, 0), description="Miller index (h, k, l) of the surface in the lattice vectors of the bulk cell as "
        "built, before `bulk.repeat`: bulk.file's cell, or ase.build.bulk's (the conventional cell with "
        "cubic: true, else the primitive one; a hexagonal cell's (10-10) is (1, 0, 0))"
    )
    layers: int = Field(
        2, ge=1, description="copies of the bulk cell stacked along the surface normal (ase.build.surface "
        "`layers`): the slab holds layers x (atoms of the bulk cell) before `size`; the atomic planes this "
        "makes depend on cell and facet (cubic fcc: 2 per copy for (100) and (110), 1 for (111)); "
        "`reactforge check` prints both"
    )
    vacuum_A: float = Field(8.0, gt=0, description="vacuum on each side of the slab (thesis: 8 Å)")
    size: tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] = Field(
        (1, 1),
        description="in-plane supercell: a repeat (n1, n2) or a 2×2 integer matrix, e.g. [[1, 1], [-1, 1]] "
        "for the √2×√2 R45° cell",
    )
    fixed_bottom_layers: int | None = Field(
        None, ge=0, description="atomic layers (z-clustered) held fixed at the bottom; thesis: 2 (default "
        "when neither this nor fixed_bottom_atoms is given)"
    )
    fixed_bottom_atoms: int | None = Field(
        None, ge=0, description="the n lowest atoms held fixed (thesis In2O3(110): 40)"
    )
    layer_tolerance_A: float = Field(0.5, gt=0, description="atoms closer than this in z share a layer")

    @model_validator(mode="after")
    def _one_fixing_rule(self):
        if self.fixed_bottom_layers is not None and self.fixed_bottom_atoms is not None:
            raise ValueError("surface: give at most one of 'fixed_bottom_layers' or 'fixed_bottom_atoms'")
        if self.fixed_bottom_layers is None and self.fixed_bottom_atoms is None:
            self.fixed_bottom_layers = 2
        if isinstance(self.size[0], tuple):
            (a, b), (c, d) = self.size
            if a * d - b * c <= 0:
                raise ValueError("surface.size: the 2×2 matrix must have a positive determinant")
        elif min(self.size) < 1:
            raise ValueError("surface.size: repeats must be >= 1")
        return self


class VacancySite(Strict):
    """Active site made by removing one surface atom (thesis: the oxygen vacancy on In2O3(110))."""

    kind: Literal["vacancy"] = "vacancy"
    element: str = Field(..., description="element of the atom removed (no default: e.g. O for an oxide's "
                         "O vacancy)")
    rule: Literal["topmost", "central_top"] = Field(
        "topmost",
        description="which atom: the highest one of that element, or the top-layer one nearest the cell centre",
    )
    index: int | None = Field(None, ge=0, description="slab atom index to remove; overrides `rule`")


class AtomSite(Strict):
    """Active site at an existing slab atom (a metal surface atom, a dopant, an adatom), nothing removed."""

    kind: Literal["site_index"] = "site_index"
    index: int = Field(..., ge=0, description="index of the atom in the slab as built (ase.build.surface's "
                       "order, then the in-plane `size` supercell; or surface.file's order); adsorbate "
                       "positions are relative to it; `reactforge check` prints its element and position")


ActiveSite = Annotated[Union[VacancySite, AtomSite], Field(discriminator="kind")]


class Fragment(Strict):
    """One adsorbed fragment placed relative to the active site (x, y in the surface plane, z up).

    Either explicit `symbols` + `positions_A`, or an ase.build.molecule name (or a single element)
    rotated by `rotation_deg` (about x, y, z, in that order) and translated so that atom `anchor`
    sits at `position_A`.
    """

    molecule: str | None = Field(None, description="ase.build.molecule name (e.g. 'CO2', 'H2') or an element")
    position_A: Vec3 = Field((0.0, 0.0, 2.0), description="anchor atom position relative to the active site")
    anchor: int = Field(0, ge=0, description="index in the molecule of the atom placed at position_A")
    rotation_deg: Vec3 = Field((0.0, 0.0, 0.0), description="rotation about x, y, z before translation")
    symbols: str | None = Field(None, description="chemical symbols in order, e.g. 'OCO'")
    positions_A: list[Vec3] | None = Field(None, description="per atom, relative to the active site")

    @model_validator(mode="after")
    def _one_form(self):
        explicit = self.symbols is not None or self.positions_A is not None
        if explicit == (self.molecule is not None):
            raise ValueError("fragment: give either 'molecule' or 'symbols' with 'positions_A'")
        if explicit and (self.symbols is None or self.positions_A is None):
            raise ValueError("fragment: 'symbols' and 'positions_A' go together")
        from ase.data import atomic_numbers

        try:
            symbols = self.chemical_symbols()
        except (KeyError, ValueError):  # ASE's errors for an unknown molecule name or unparsable symbols
            symbols = None
        if symbols is None or any(s not in atomic_numbers for s in symbols):
            raise ValueError(f"fragment: symbols {self.symbols!r} are not chemical symbols" if explicit else
                             f"fragment: molecule {self.molecule!r} is neither an element nor an ase.build.molecule "
                             "name (e.g. 'CO2', 'H2O', 'CH3OH')")
        if explicit and len(symbols) != len(self.positions_A):
            raise ValueError("fragment: 'symbols' and 'positions_A' differ in length")
        return self

    def chemical_symbols(self) -> list[str]:
        from ase.build import molecule as ase_molecule
        from ase.data import chemical_symbols
        from ase.symbols import string2symbols

        if self.symbols is not None:
            return string2symbols(self.symbols)
        if self.molecule in chemical_symbols:
            return [self.molecule]
        return ase_molecule(self.molecule).get_chemical_symbols()


class IntermediateSpec(Strict):
    """An approximate intermediate: a full slab+adsorbate file, or fragments placed on the active site.

    Atoms are ordered slab first, then adsorbate atoms in fragment order; the initial and final
    intermediates of a reaction must list the same elements in the same order (NEB images map atom
    i to atom i; like atoms are then permuted by block 6)."""

    file: str | None = Field(None, description="slab+adsorbate file (slab atoms first, as built here)")
    fragments: list[Fragment] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.file is None) == (not self.fragments):
            raise ValueError("intermediate: give exactly one of 'file' or 'fragments'")
        return self

    def adsorbate_symbols(self) -> list[str] | None:
        """Adsorbate elements in order, or None when only the file knows them."""
        if self.file is not None:
            return None
        return [s for f in self.fragments for s in f.chemical_symbols()]


class ReactionSpec(Strict):
    """One elementary step: an ordered pair of intermediates (NEB initial -> final)."""

    name: Identifier = Field(..., description="also the file name of its path: paths/<name>.xyz")
    initial: str
    final: str


# ----------------------------------------------------------------------------------------------
# Active-learning blocks (thesis §3.3, Fig. 3.3)
# ----------------------------------------------------------------------------------------------


class Block0Initial(Strict):
    """Block 0: isolated atoms (E0s), the bulk cell, rattled + deformed bulk cells."""

    isolated_atoms: bool = Field(True, description="label each element alone in a box (GAP/MACE E0s)")
    isolated_box_A: float = Field(12.0, gt=0, description="cubic box edge for isolated atoms and the gas references")
    gas_fmax_eV_per_A: float = Field(
        0.01, gt=0, description="reference relaxation of each gas reference (`gas_references`) to this max force"
    )
    gas_max_steps: int = Field(200, ge=1, description="BFGS steps allowed for each gas reference's relaxation")
    n_rattled: int = Field(10, ge=0, description="rattled + deformed bulk copies")
    rattle_sigma_A: float = Field(0.02, ge=0, description="Gaussian displacement std of every atom")
    strain_sigma: float = Field(0.01, ge=0, description="Gaussian std of the symmetric strain components")


class MDBlock(Strict):
    """An MD active-learning block: terminate when a full run never exceeds σ_thr."""

    md_steps: int = Field(10000, gt=0, description="steps of one full run (thesis: 10 ps at 1 fs)")
    timestep_fs: float = Field(1.0, gt=0)
    temperature_K: float = Field(300.0, gt=0)
    friction_per_fs: float = Field(0.01, gt=0, description="Langevin friction")
    check_every: int = Field(1, ge=1, description="evaluate per-atom σ every n steps")
    max_iterations: int = Field(20, ge=1, description="stop the block (termination not met) after this many")


class Block1Bulk(MDBlock):
    """Block 1: bulk MD."""


class Block2Surface(MDBlock):
    """Block 2: MD of the clean slab and of the slab with the active site (vacancy)."""

    clean_slab: bool = Field(True, description="also run the slab without the vacancy")
    label_slabs: bool = Field(
        True, description="label the slabs themselves before the first MD (thesis Table A.1: iteration 0)"
    )


class Block3AdsorbateSeed(MDBlock):
    """Block 3: enhance the set before iterating (dimers, placements), then adsorbate MD from the
    farthest-point-sampled placements until no run breaches σ_thr."""

    md_steps: int = Field(1000, gt=0, description="thesis: 1 ps")
    dimers_per_pair: int = Field(4, ge=0, description="dimers for each element pair of the adsorbates")
    dimer_pairs: Literal["adsorbate_surface", "adsorbate"] = Field(
        "adsorbate_surface",
        description="'adsorbate_surface': pairs with at least one adsorbate element (H2 on ZnO: H-H, H-O, "
        "H-Zn), the short-range repulsion a GAP cannot extrapolate; 'adsorbate': pairs of adsorbate "
        "elements only, as thesis Table A.1 (C, H, O -> 24 dimers); see the README for what that costs",
    )
    dimer_max_force_eV_per_A: float = Field(20.0, gt=0, description="shortest dimer: reference force at most this")
    dimer_max_distance_A: float = Field(
        4.0, gt=0, description="longest dimer; dimers are spaced evenly from the shortest to this"
    )
    dimer_weight: float = Field(0.2, gt=0, le=1, description="energy and force weight of dimers (thesis: 1/5)")
    dimer_box_A: float = Field(12.0, gt=0, description="cubic box edge for dimers")
    site_md_steps: int = Field(
        1000, ge=0, description="MLFF MD of the active-site slab before placement (block-2 potential)"
    )
    site_md_snapshots: int = Field(5, ge=1, description="snapshots of that MD adsorbates are placed on")
    placement_radius_A: float = Field(3.0, gt=0, description="place adsorbates within this of the active site")
    placements_per_snapshot: int = Field(10, ge=1, description="candidate placements per intermediate and snapshot")
    fps_per_intermediate: int = Field(3, ge=1, description="placements kept per intermediate (FPS on SOAP)")
    soap_cutoff_A: float = Field(5.0, gt=0, description="SOAP cutoff of the FPS descriptor")
    soap_l_max: int = Field(4, ge=0)
    soap_n_max: int = Field(6, ge=1)


class Block4AdsorbateMD(MDBlock):
    """Block 4: MLFF MD from every approximate intermediate until no run breaches σ_thr."""

    md_steps: int = Field(1000, gt=0, description="thesis: 1 ps")


class Block5GeometryOptimisation(Strict):
    """Block 5: MLFF minima of all intermediates, labelled; terminate when the reference max force on
    every minimum is below the criterion."""

    fmax_criterion_eV_per_A: float = Field(0.2, gt=0, description="thesis: 0.2 eV/Å reference max force")
    mlff_fmax_eV_per_A: float = Field(0.001, gt=0, description="MLFF optimisation fmax (thesis 0.001 eV/Å)")
    max_steps: int = Field(1000, gt=0)
    optimizer: Literal["BFGS", "FIRE", "LBFGS"] = "BFGS"
    max_iterations: int = Field(20, ge=1)


class Block6NEB(Strict):
    """Block 6: minimum energy paths for every reaction and every permutation of like adsorbate atoms;
    the lowest-energy path is labelled; terminate when |E_MLFF − E_ref| is below the criterion on every
    sampled image."""

    n_images: int = Field(10, ge=1, description="intermediate NEB images (thesis: 10)")
    interpolated_images: int = Field(
        1, ge=0, description="linearly interpolated images per reaction added before iterating (Table A.1: 5 for 5)"
    )
    interpolation: Literal["idpp", "linear"] = "idpp"
    climb: bool = True
    method: Literal["aseneb", "improvedtangent", "eb", "spline", "string"] = Field(
        "spline", description="thesis: splines with the Exp preconditioner"
    )
    precon: Literal["Exp"] | None = "Exp"
    optimizer: Literal["FIRE", "BFGS", "LBFGS"] = Field(
        "FIRE", description="band optimiser when precon is null"
    )
    spring_k_eV_per_A2: float = Field(0.1, gt=0)
    mlff_fmax_eV_per_A: float = Field(0.01, gt=0, description="thesis: 0.01 eV/Å with the MLFF")
    max_steps: int = Field(1000, gt=0)
    permutation_limit: int = Field(
        24, ge=1, description="above this many like-atom permutations, keep the geometrically closest"
    )
    permutations_kept: int = Field(
        6, ge=1, description="permutations kept by the geometric pre-filter when over the limit"
    )
    screen_steps: int | None = Field(
        30, ge=1, description="two-stage screening: every permutation's band first relaxes this many steps "
        "without climbing image; the full climbing-image NEB then runs from the screened bands of the lowest "
        "and those within screen_margin_eV only (null: the full NEB for every permutation)"
    )
    screen_margin_eV: float = Field(
        0.1, ge=0, description="screened bands whose highest image is within this of the lowest band's also "
        "get the full NEB: 0.1 eV is ~4 kT at 300 K (a path above that carries under 2 % of the flux), and "
        "covers the reordering a short, non-climbing relaxation leaves between two sensible paths"
    )
    drop_margin_eV: float = Field(
        0.5, gt=0, description="a permutation whose screened band stays more than this above the lowest for two "
        "iterations in a row is screened no more (atoms that pass through each other: eV above)"
    )
    energy_criterion_eV: float = Field(0.05, gt=0, description="|E_MLFF − E_ref| on every sampled image")
    path_fmax_criterion_eV_per_A: float | None = Field(
        0.1, gt=0, description="and the largest reference force across the band on the labelled images (the "
        "climbing image's F − 2(F·τ)τ at the top): what a reference NEB started from the band sees at step 0. "
        "Energies alone pass a band beside the reference's path; null: the energy criterion only"
    )
    label_endpoints: bool = Field(
        False, description="also label the band's two ends every iteration (MLFF minima, re-relaxed with each "
        "model); thesis Table A.1 counts the interior images only. Without them the per-iteration reference "
        "barrier is not known; the validation gives it"
    )
    warm_start: bool = Field(
        False, description="from the 2nd iteration, start each permutation's band from its band of the previous "
        "iteration (interior images, ends re-relaxed) instead of interpolating again. Faster, but a band that "
        "went astray stays astray (README: measured)"
    )
    max_iterations: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _precon_needs_spline(self):
        if self.precon is not None and self.method not in ("spline", "string"):
            raise ValueError("block6: precon='Exp' requires method='spline' or 'string' (ASE NEB)")
        if self.permutations_kept > self.permutation_limit:
            raise ValueError("block6: permutations_kept must not exceed permutation_limit")
        return self


class ValidationSpec(Strict):
    """Reference NEB initialised from the MLFF's final path of each reaction (thesis §3.4.4: converged
    with no step, below 0.05 eV/Å)."""

    enabled: bool = False
    fmax_eV_per_A: float = Field(0.05, gt=0, description="thesis: 0.05 eV/Å for reference NEBs")
    max_steps: int = Field(50, ge=0, description="reference NEB steps allowed after step 0")
    relax_endpoints: bool = Field(
        True, description="relax the band's two ends on the reference first, so the reference barrier is "
        "measured from reference minima (the MLFF minima are minima only to the model's force accuracy)",
    )
    endpoint_max_steps: int = Field(100, ge=1, description="BFGS steps for each endpoint relaxation")


class Blocks(Strict):
    """Per-block parameters (thesis defaults)."""

    b0_initial: Block0Initial = Block0Initial()
    b1_bulk: Block1Bulk = Block1Bulk()
    b2_surface: Block2Surface = Block2Surface()
    b3_adsorbate_seed: Block3AdsorbateSeed = Block3AdsorbateSeed()
    b4_adsorbate_md: Block4AdsorbateMD = Block4AdsorbateMD()
    b5_geometry: Block5GeometryOptimisation = Block5GeometryOptimisation()
    b6_neb: Block6NEB = Block6NEB()


BLOCK_NAMES = {
    0: "initial",
    1: "bulk-md",
    2: "surface-md",
    3: "adsorbate-seed-md",
    4: "adsorbate-md",
    5: "geometry-optimisation",
    6: "neb",
}

# ----------------------------------------------------------------------------------------------
# The protocol
# ----------------------------------------------------------------------------------------------


class Protocol(ProtocolFile):
    """The catalysis active-learning protocol (thesis chapter 3): everything a run needs."""

    name: Identifier = Field(..., description="also the default run directory, runs/<name>")
    workflow: Literal["catalysis"] = "catalysis"
    bulk: BulkSpec
    surface: SurfaceSpec
    active_site: ActiveSite = Field(..., description="where the adsorbates sit; no default, the chemistry is "
                                    "the user's: {kind: vacancy, element: O} removes a surface atom, "
                                    "{kind: site_index, index: N} keeps the slab whole (metal surfaces)")
    intermediates: dict[str, IntermediateSpec] = Field(..., min_length=1)
    reactions: list[ReactionSpec] = Field(default_factory=list)
    gas_references: list[str] | None = Field(
        None, description="gas-phase molecules (ase.build.molecule names, or an element for its free atom) "
        "whose chemical potentials adsorption energies are referred to: relaxed with the reference in block 0, "
        "one per element, independent (H2, H2O, CO2 fix μ of H, O, C). Null: chosen from the adsorbate "
        "elements (H -> H2, O -> H2O, C -> CO2, N -> N2, any other -> its free atom); []: no adsorption energies"
    )
    reference: Reference = XTBReference()
    model: ModelSpec = GAPModelSpec()
    sigma_thr_eV: float = Field(0.05, gt=0, description="σ_thr: per-atom σ that interrupts a simulation (50 meV)")
    blocks: list[int] = Field(default_factory=lambda: list(range(7)), description="blocks to run, 0-6")
    parameters: Blocks = Blocks()
    validation: ValidationSpec = ValidationSpec()
    seed: int = Field(0, ge=0, description="random seed of the rattled cells, placements and every MD "
                      "thermostat: runs with different seeds are independent repeats")

    @model_validator(mode="before")
    @classmethod
    def _site_is_given(cls, data):
        # a slab with no site named used to get an O vacancy silently (a metal slab then failed on it)
        if isinstance(data, dict) and "active_site" not in data:
            raise ValueError("field 'active_site' is required: {kind: vacancy, element: O} removes a surface "
                             "atom (an oxide's vacancy), {kind: site_index, index: N} keeps slab atom N as the "
                             "site (a metal surface); `reactforge check` lists the slab's top-layer atoms with their indices")
        return data

    @field_validator("blocks")
    @classmethod
    def _known_blocks(cls, v: list[int]) -> list[int]:
        bad = sorted(set(v) - set(BLOCK_NAMES))
        if bad:
            raise ValueError(f"unknown block(s) {bad}; blocks are 0-6")
        return sorted(set(v))

    @field_validator("gas_references")
    @classmethod
    def _known_molecules(cls, v: list[str] | None) -> list[str] | None:
        from ase.build import molecule
        from ase.data import chemical_symbols

        # whether they fix every adsorbate element's μ is checked on the built system (workflows/adsorption.py)
        for name in v or []:
            if name not in chemical_symbols[1:]:
                try:
                    molecule(name)
                except KeyError:
                    raise ValueError(f"{name!r} is neither an element nor an ase.build.molecule name (g2: e.g. "
                                     "'H2', 'H2O', 'CO2', 'N2', 'NH3', 'CH4')") from None
        if len(set(v or [])) != len(v or []):
            raise ValueError("a molecule is named twice")
        return v

    @model_validator(mode="after")
    def _reactions_connect_intermediates(self):
        for r in self.reactions:
            for end in (r.initial, r.final):
                if end not in self.intermediates:
                    raise ValueError(f"reaction {r.name!r}: unknown intermediate {end!r}")
            a = self.intermediates[r.initial].adsorbate_symbols()
            b = self.intermediates[r.final].adsorbate_symbols()
            if a is not None and b is not None and a != b:
                raise ValueError(
                    f"reaction {r.name!r}: {r.initial!r} and {r.final!r} must list the same adsorbate "
                    f"elements in the same order ({''.join(a)} vs {''.join(b)})"
                )
        names = [r.name for r in self.reactions]
        if len(names) != len(set(names)):
            raise ValueError("reaction names must be unique")
        if 6 in self.blocks and not self.reactions:
            raise ValueError("block 6 (NEB) needs at least one reaction")
        return self


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a catalysis protocol YAML (schemas.loading.load_protocol): relative file paths
    then resolve against its folder (`protocol.resolve`)."""
    return _load(path, Protocol)
