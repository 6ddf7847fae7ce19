"""Structures the catalysis protocol starts from (thesis §3.3, block 0 and the approximate intermediates).

Bulk, slab (with its fixed bottom), active site (vacancy), intermediates placed on the site, isolated
atoms for E0s, and rattled + deformed bulk cells. Pure functions of the protocol: no reference calls.
Every structure carries `info["config_type"]` so labels can say what they are.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk as ase_bulk
from ase.build import make_supercell, surface
from ase.constraints import FixAtoms

from reactforge.schemas.loading import read_structure
from reactforge.schemas.tasks import ISOLATED_ATOM
from reactforge.schemas.protocol import (
    AtomSite,
    BulkSpec,
    Fragment,
    IntermediateSpec,
    Protocol,
    SurfaceSpec,
    VacancySite,
)


# The structure files a protocol names are read through its `resolve` (its file's folder); without one,
# a name is a path as given.
Resolve = Callable[[str], Path]


def _read(name: str, resolve: Resolve | None, field: str) -> Atoms:
    # the last frame, as ase.io.read gives without an index (a relaxation's output is read as its end point)
    return read_structure(resolve(name) if resolve is not None else Path(name), field, index=-1)


def build_bulk(spec: BulkSpec, resolve: Resolve | None = None, repeat: bool = True) -> Atoms:
    """The bulk cell (file or ase.build.bulk), repeated by `spec.repeat` (the slab is cut from the
    unrepeated cell: `repeat=False`)."""
    if spec.file is not None:
        atoms = _read(spec.file, resolve, "bulk.file")
    else:
        kwargs = {k: v for k, v in {"crystalstructure": spec.crystalstructure, "a": spec.a_A, "c": spec.c_A}.items()
                  if v is not None}
        try:
            atoms = ase_bulk(spec.name, cubic=spec.cubic, **kwargs)
        except (ValueError, KeyError, ArithmeticError) as err:  # e.g. a_A: 1e300 divides by zero in ASE
            raise ValueError(f"field 'bulk': ase.build.bulk({spec.name!r}, cubic={spec.cubic}, "
                             f"{', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) fails: {err}") from None
    if repeat:
        atoms = atoms.repeat(spec.repeat)
    atoms.pbc = True
    atoms.info["config_type"] = "bulk"
    return atoms


def atomic_layers(atoms: Atoms, tolerance_A: float = 0.5) -> list[list[int]]:
    """Atom indices grouped into layers along z, bottom first (gaps larger than the tolerance split)."""
    order = np.argsort(atoms.positions[:, 2], kind="stable")
    z = atoms.positions[order, 2]
    layers, current = [], [int(order[0])]
    for i, idx in enumerate(order[1:], start=1):
        if z[i] - z[i - 1] > tolerance_A:
            layers.append(current)
            current = []
        current.append(int(idx))
    layers.append(current)
    return layers


def fixed_bottom_indices(slab: Atoms, spec: SurfaceSpec) -> list[int]:
    """Indices held fixed: the lowest atomic layers or the n lowest atoms."""
    if spec.fixed_bottom_atoms is not None:
        return sorted(int(i) for i in np.argsort(slab.positions[:, 2], kind="stable")[: spec.fixed_bottom_atoms])
    layers = atomic_layers(slab, spec.layer_tolerance_A)
    n = spec.fixed_bottom_layers or 0
    if n >= len(layers):
        raise ValueError(f"surface.fixed_bottom_layers={n} would fix all {len(layers)} atomic layers")
    return sorted(i for layer in layers[:n] for i in layer)


def _in_plane_matrix(size) -> np.ndarray:
    if isinstance(size[0], (tuple, list)):
        (a, b), (c, d) = size
        return np.array([[a, b, 0], [c, d, 0], [0, 0, 1]])
    return np.diag([size[0], size[1], 1])


def build_slab(bulk: Atoms, spec: SurfaceSpec, resolve: Resolve | None = None) -> Atoms:
    """The slab: ase.build.surface of the bulk, in-plane supercell, a1 along x, bottom fixed."""
    if spec.file is not None:
        slab = _read(spec.file, resolve, "surface.file")
    else:
        slab = surface(bulk, spec.miller, spec.layers, vacuum=spec.vacuum_A, periodic=True)
        P = _in_plane_matrix(spec.size)
        if not np.array_equal(P, np.eye(3, dtype=int)):
            slab = make_supercell(slab, P)
        # a1 along x and a2 in the xy plane, so site-relative offsets in the protocol are in the surface frame
        cell, _ = slab.cell.standard_form()
        slab.set_cell(cell, scale_atoms=True)
        slab.wrap()
        slab.center(vacuum=spec.vacuum_A, axis=2)
    slab.pbc = True
    slab.set_constraint(FixAtoms(indices=fixed_bottom_indices(slab, spec)))
    slab.info["config_type"] = "slab"
    return slab


def _site_atom_index(slab: Atoms, site: VacancySite, tolerance_A: float) -> int:
    if site.index is not None:
        if site.index >= len(slab):
            raise ValueError(f"active_site.index {site.index} is beyond the slab's {len(slab)} atoms")
        return site.index
    candidates = [i for i, s in enumerate(slab.get_chemical_symbols()) if s == site.element]
    if not candidates:
        raise ValueError(f"active_site: the slab has no {site.element} atom to remove")
    z = slab.positions[candidates, 2]
    top = [i for i, zi in zip(candidates, z) if zi > z.max() - tolerance_A]
    if site.rule == "topmost":
        return max(top, key=lambda i: (slab.positions[i, 2], -i))
    centre = slab.cell.cartesian_positions([0.5, 0.5, 0.0])[:2]
    return min(top, key=lambda i: (np.linalg.norm(slab.positions[i, :2] - centre), i))


def make_active_site(slab: Atoms, site: VacancySite | AtomSite, tolerance_A: float = 0.5) -> tuple[Atoms, np.ndarray]:
    """The slab with its active site and the site's Cartesian position (the removed atom's for a vacancy).

    Fixed atoms stay fixed (indices are shifted past the removed atom)."""
    if isinstance(site, AtomSite):
        if site.index >= len(slab):
            raise ValueError(f"active_site.index {site.index} is beyond the slab's {len(slab)} atoms")
        out = slab.copy()
        out.info["config_type"] = "active_site"
        return out, slab.positions[site.index].copy()
    idx = _site_atom_index(slab, site, tolerance_A)
    position = slab.positions[idx].copy()
    fixed = fixed_indices(slab)
    out = slab.copy()
    out.set_constraint()
    del out[idx]
    out.set_constraint(FixAtoms(indices=[i - (i > idx) for i in fixed if i != idx]))
    out.info["config_type"] = "vacancy"
    out.info["vacancy_element"] = slab[idx].symbol
    return out, position


def fixed_indices(atoms: Atoms) -> list[int]:
    """Indices held by FixAtoms constraints."""
    return sorted(int(i) for c in atoms.constraints if isinstance(c, FixAtoms) for i in c.index)


def fragment_atoms(fragment: Fragment) -> Atoms:
    """A fragment's atoms relative to the active site (rotated, anchor at position_A)."""
    from ase.build import molecule
    from ase.data import chemical_symbols

    if fragment.symbols is not None:
        return Atoms(fragment.symbols, positions=np.asarray(fragment.positions_A, dtype=float))
    if fragment.molecule in chemical_symbols:
        mol = Atoms(fragment.molecule, positions=[[0.0, 0.0, 0.0]])
    else:
        mol = molecule(fragment.molecule)
    if fragment.anchor >= len(mol):
        raise ValueError(f"fragment {fragment.molecule!r}: anchor {fragment.anchor} beyond its {len(mol)} atoms")
    for angle, axis in zip(fragment.rotation_deg, "xyz"):
        if angle:
            mol.rotate(angle, axis, center=mol.positions[fragment.anchor])
    mol.translate(np.asarray(fragment.position_A) - mol.positions[fragment.anchor])
    return mol


def build_intermediate(
    site_slab: Atoms, site_position: np.ndarray, spec: IntermediateSpec, name: str, resolve: Resolve | None = None
) -> Atoms:
    """Slab with the active site plus the adsorbate: slab atoms first, then adsorbate atoms in order."""
    if spec.file is not None:
        atoms = _read(spec.file, resolve, f"intermediates.{name}.file")
        if len(atoms) <= len(site_slab) or atoms.get_chemical_symbols()[: len(site_slab)] != site_slab.get_chemical_symbols():
            raise ValueError(f"intermediate {name!r}: its file must start with the active-site slab's atoms")
        atoms.pbc = True
        if not np.allclose(atoms.cell.array, site_slab.cell.array, atol=1e-3):
            raise ValueError(f"intermediate {name!r}: its cell differs from the slab's")
        atoms.set_constraint(FixAtoms(indices=fixed_indices(site_slab)))
    else:
        adsorbate = Atoms()
        for frag in spec.fragments:
            adsorbate += fragment_atoms(frag)
        adsorbate.translate(site_position)
        atoms = site_slab.copy()
        atoms += adsorbate
        atoms.set_constraint(FixAtoms(indices=fixed_indices(site_slab)))
    # no wrap: an adsorbate stays whole across the cell boundary (NEB interpolation, placement)
    atoms.info.update(config_type="intermediate", intermediate=name, n_slab_atoms=len(site_slab))
    return atoms


def isolated_atoms(elements: list[str], box_A: float = 12.0) -> list[Atoms]:
    """One atom per element, centred in a cubic box (labels give the E0s)."""
    out = []
    for el in sorted(set(elements)):
        a = Atoms(el, positions=[[box_A / 2] * 3], cell=[box_A] * 3, pbc=False)
        a.info.update(config_type=ISOLATED_ATOM)
        out.append(a)
    return out


def rattled_bulk(bulk: Atoms, n: int, rattle_sigma_A: float, strain_sigma: float, seed: int = 0) -> list[Atoms]:
    """n copies of the bulk with Gaussian displacements (σ Å) and a random symmetric strain (σ) each."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a = bulk.copy()
        eps = rng.normal(0.0, strain_sigma, (3, 3))
        eps = 0.5 * (eps + eps.T)
        a.set_cell(a.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        a.positions += rng.normal(0.0, rattle_sigma_A, a.positions.shape)
        a.info.update(config_type="bulk_rattled", rattle_index=k)
        out.append(a)
    return out


def elements_of(protocol: Protocol, system: "CatalysisSystem") -> list[str]:
    """All elements of the bulk, slab and adsorbates (sorted)."""
    els = set(system.bulk.get_chemical_symbols()) | set(system.slab.get_chemical_symbols())
    for atoms in system.intermediates.values():
        els |= set(atoms.get_chemical_symbols())
    return sorted(els)


@dataclass
class CatalysisSystem:
    """Everything built from a protocol before any calculation."""

    bulk: Atoms
    slab: Atoms
    site_slab: Atoms
    site_position: np.ndarray
    intermediates: dict[str, Atoms] = field(default_factory=dict)
    elements: list[str] = field(default_factory=list)

    def adsorbate_indices(self, name: str) -> list[int]:
        return list(range(len(self.site_slab), len(self.intermediates[name])))

    def adsorbate_elements(self) -> list[str]:
        n = len(self.site_slab)
        return sorted({s for a in self.intermediates.values() for s in a.get_chemical_symbols()[n:]})


def describe_site(protocol: Protocol, system: CatalysisSystem) -> list[str]:
    """--check lines: the slab's atomic layers, the active site, and the top layer's atoms by index (what
    an `active_site: {kind: site_index}` refers to)."""
    slab, tol = system.slab, protocol.surface.layer_tolerance_A
    layers = atomic_layers(slab, tol)
    site = protocol.active_site
    x, y, z = system.site_position
    if isinstance(site, AtomSite):
        what = f"slab atom {site.index} ({slab[site.index].symbol}), nothing removed"
    else:
        idx = _site_atom_index(slab, site, tol)
        what = f"vacancy: slab atom {idx} ({slab[idx].symbol}) removed"
    top = ", ".join(f"{i} {slab[i].symbol}" for i in sorted(layers[-1]))
    return [f"slab: {len(layers)} atomic layers (z-clustered, {tol} Å), bottom {len(fixed_indices(slab))} atoms fixed",
            f"active site: {what}, at ({x:.2f}, {y:.2f}, {z:.2f}) Å; top-layer atoms (index element): {top}"]


def build_system(protocol: Protocol) -> CatalysisSystem:
    """Bulk, slab, active site and every intermediate of a protocol; checks reactions' compositions."""
    base = protocol.resolve
    b = build_bulk(protocol.bulk, base)
    slab = build_slab(build_bulk(protocol.bulk, base, repeat=False), protocol.surface, base)
    site_slab, site_pos = make_active_site(slab, protocol.active_site, protocol.surface.layer_tolerance_A)
    inter = {
        name: build_intermediate(site_slab, site_pos, spec, name, base)
        for name, spec in protocol.intermediates.items()
    }
    for r in protocol.reactions:
        a, c = inter[r.initial], inter[r.final]
        if a.get_chemical_symbols() != c.get_chemical_symbols():
            raise ValueError(
                f"reaction {r.name!r}: {r.initial!r} and {r.final!r} must have the same atoms in the same order"
            )
    system = CatalysisSystem(bulk=b, slab=slab, site_slab=site_slab, site_position=site_pos, intermediates=inter)
    system.elements = elements_of(protocol, system)
    return system


