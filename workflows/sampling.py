"""Configuration sampling for the catalysis protocol (thesis §3.3, blocks 3-6).

- dimers spaced so the reference's repulsive force never exceeds a bound (20 eV/Å);
- adsorbate placements around the active site with pymatgen's AdsorbateSiteFinder;
- farthest-point sampling on SOAP distances (quippy descriptors, De et al.'s average kernel);
- permutations of like adsorbate atoms between a reaction's initial and final state, with a
  geometric pre-filter when there are too many (§3.4.3);
- linearly interpolated images between reaction endpoints (block 6, before iterating).

Functions take plain ASE Atoms and callables; none builds a reference calculator itself.
"""
from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii
from ase.geometry import find_mic

# ----------------------------------------------------------------------------------------------
# Dimers
# ----------------------------------------------------------------------------------------------


def element_pairs(elements: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair of the elements, like pairs included (C, H, O -> 6 pairs, thesis: 24 dimers)."""
    els = sorted(set(elements))
    return list(itertools.combinations_with_replacement(els, 2))


def dimer_pairs(elements: Sequence[str], adsorbate: Sequence[str], with_surface: bool = True) -> list[tuple[str, str]]:
    """The element pairs that get dimers: every pair with an adsorbate element in it, or with
    `with_surface=False` only pairs of adsorbate elements (thesis Table A.1: CO2 + H2 on In2O3 ->
    C, H, O -> 6 pairs)."""
    ads = set(adsorbate)
    return [(a, b) for a, b in element_pairs(elements)
            if (a in ads and b in ads) or (with_surface and (a in ads or b in ads))]


def dimer(a: str, b: str, distance_A: float, box_A: float = 12.0) -> Atoms:
    """Two atoms along x, centred in a non-periodic cubic box."""
    atoms = Atoms([a, b], positions=[[0.0, 0.0, 0.0], [distance_A, 0.0, 0.0]], cell=[box_A] * 3, pbc=False)
    atoms.center()
    atoms.info.update(config_type="dimer", dimer_distance_A=float(distance_A))
    return atoms


def dimer_axial_force(forces_fn: Callable[[Atoms], np.ndarray], a: str, b: str, r_A: float, box_A: float) -> float:
    """Repulsive force along the dimer axis (eV/Å, positive = repulsive); inf when the reference fails
    there (e.g. a force above its physical bound)."""
    try:
        f = np.asarray(forces_fn(dimer(a, b, r_A, box_A)), dtype=float)
    except Exception:  # a failed or unphysical reference call at short range counts as "too close"
        return math.inf
    # atom 1 sits at +x: a repulsive pair pushes it further along +x
    return float(0.5 * (f[1, 0] - f[0, 0]))


def shortest_dimer_distance(
    forces_fn: Callable[[Atoms], np.ndarray],
    a: str,
    b: str,
    max_force_eV_per_A: float = 20.0,
    box_A: float = 12.0,
    shrink: float = 0.85,
    tol_A: float = 0.01,
) -> float:
    """Shortest distance at which the reference's repulsive force is still ≤ the bound (to tol_A).

    Starts at the sum of covalent radii and walks by a constant factor (inwards while the force is
    below the bound, outwards while above) until the bound is bracketed. Inside the bracket, log F is
    close to linear in r (exponential repulsion), so false position on log F aimed just below the
    bound, followed by a probe tol_A further in, closes it in 2-4 reference calls per pair where
    bisection to the same tolerance needs 5; a failed call (inf) falls back to bisection.
    The returned distance is on the safe side."""
    F = max_force_eV_per_A

    def force(r: float) -> float:
        return dimer_axial_force(forces_fn, a, b, r, box_A)

    r = covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]]
    f = force(r)
    above = f > F
    step = 1.0 / shrink if above else shrink
    for _ in range(40):
        r_prev, f_prev = r, f
        r = r * step
        f = force(r)
        if (f > F) != above:
            break
    else:
        raise ValueError(f"dimer {a}-{b}: could not bracket a repulsion of {F} eV/Å")
    (r_safe, f_safe), (r_bad, f_bad) = ((r, f), (r_prev, f_prev)) if above else ((r_prev, f_prev), (r, f))
    probe = False
    for _ in range(20):
        width = r_safe - r_bad
        if width <= tol_A:
            break
        if probe:
            mid = r_safe - tol_A
        elif math.isfinite(f_bad) and f_safe > 0:
            t = (math.log(f_bad) - math.log(0.95 * F)) / (math.log(f_bad) - math.log(f_safe))
            mid = r_bad + min(max(t, 0.1), 0.9) * width
        else:
            mid = 0.5 * (r_safe + r_bad)
        f = force(mid)
        if f > F:
            r_bad, f_bad, probe = mid, f, False
        else:
            # a safe point near the bound: next, test one tolerance further in
            probe = not probe and f > 0.8 * F
            r_safe, f_safe = mid, f
    return r_safe


def make_dimers(
    forces_fn: Callable[[Atoms], np.ndarray],
    elements: Sequence[str],
    per_pair: int = 4,
    max_force_eV_per_A: float = 20.0,
    max_distance_A: float = 4.0,
    box_A: float = 12.0,
    weight: float = 0.2,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> list[Atoms]:
    """`per_pair` dimers for every element pair, spaced evenly from the shortest allowed distance
    (repulsion ≤ max_force under the reference) to max_distance_A; energy/force weights set in info."""
    out = []
    for a, b in pairs if pairs is not None else element_pairs(elements):
        r_min = shortest_dimer_distance(forces_fn, a, b, max_force_eV_per_A, box_A)
        r_max = max(max_distance_A, r_min)
        for r in np.linspace(r_min, r_max, per_pair) if per_pair > 1 else [r_min]:
            d = dimer(a, b, float(r), box_A)
            d.info.update(energy_weight=weight, force_weight=weight, dimer_min_distance_A=r_min)
            out.append(d)
    return out


# ----------------------------------------------------------------------------------------------
# Adsorbate placement (pymatgen AdsorbateSiteFinder)
# ----------------------------------------------------------------------------------------------


def _xy_mic_distance(cell, p: np.ndarray, q: np.ndarray) -> float:
    d = np.asarray(q, dtype=float) - np.asarray(p, dtype=float)
    d[2] = 0.0
    vec, _ = find_mic(d[None, :], cell, pbc=[True, True, False])
    return float(np.linalg.norm(vec[0][:2]))


def sites_near(slab: Atoms, centre: np.ndarray, radius_A: float = 3.0, height_A: float = 2.0) -> list[np.ndarray]:
    """Ontop, bridge and hollow sites of the slab's top surface (pymatgen AdsorbateSiteFinder, Delaunay
    triangulation of the top-layer atoms) whose in-plane distance to `centre` is ≤ radius_A. A site
    position is `height_A` above its coordinating atoms."""
    from pymatgen.analysis.adsorption import AdsorbateSiteFinder
    from pymatgen.io.ase import AseAtomsAdaptor

    bare = slab.copy()
    bare.set_constraint()
    finder = AdsorbateSiteFinder(AseAtomsAdaptor.get_structure(bare))
    found = finder.find_adsorption_sites(distance=height_A, put_inside=True, symm_reduce=0, near_reduce=1e-2)
    return [np.asarray(s) for s in found["all"] if _xy_mic_distance(slab.cell, centre, s) <= radius_A]


def _random_rotation_about_z(rng: np.random.Generator) -> float:
    return float(rng.uniform(0.0, 360.0))


def place_adsorbate(
    slab: Atoms,
    adsorbate: Atoms,
    centre: np.ndarray,
    n: int,
    radius_A: float = 3.0,
    height_A: float = 2.0,
    min_distance_A: float = 0.9,
    rng: np.random.Generator | None = None,
) -> list[Atoms]:
    """Up to n placements of `adsorbate` on sites within radius_A of `centre`, each with a random
    rotation about the surface normal; the adsorbate's lowest atoms sit on the site. Placements with
    any adsorbate–slab distance below min_distance_A are dropped. Slab atoms first, constraints kept."""
    from pymatgen.analysis.adsorption import AdsorbateSiteFinder
    from pymatgen.io.ase import AseAtomsAdaptor

    rng = rng or np.random.default_rng(0)
    sites = sites_near(slab, centre, radius_A, height_A)
    if not sites:
        raise ValueError(f"no adsorption site within {radius_A} Å of the active site")
    bare = slab.copy()
    bare.set_constraint()
    finder = AdsorbateSiteFinder(AseAtomsAdaptor.get_structure(bare))
    out, tries = [], 0
    while len(out) < n and tries < 20 * n:
        tries += 1
        site = sites[int(rng.integers(len(sites)))]
        mol = adsorbate.copy()
        mol.rotate(_random_rotation_about_z(rng), "z", center="COM")
        mol.spin_multiplicity = int(mol.numbers.sum()) % 2 + 1  # a lone H is a doublet; pymatgen checks
        molecule = AseAtomsAdaptor.get_molecule(mol)
        # the slab's normal is z already (build_slab), so no reorientation
        structure = finder.add_adsorbate(molecule, site, translate=True, reorient=False)
        # positions straight from the sites: pymatgen's site properties (tags) may hold None for added atoms
        placed = np.array([site.coords for site in structure])
        atoms = slab.copy()
        atoms += Atoms(adsorbate.get_chemical_symbols(), positions=placed[len(slab):])
        if min_adsorbate_slab_distance(atoms, len(slab)) < min_distance_A:
            continue
        atoms.set_constraint([c.copy() for c in slab.constraints])
        atoms.info.update(config_type="placement", site_position_A=[float(x) for x in site])
        out.append(atoms)
    return out


def min_adsorbate_slab_distance(atoms: Atoms, n_slab: int) -> float:
    """Shortest distance (minimum image) between an adsorbate atom and a slab atom."""
    if n_slab >= len(atoms):
        return math.inf
    d = atoms.get_all_distances(mic=True)[n_slab:, :n_slab]
    return float(d.min())


# ----------------------------------------------------------------------------------------------
# Farthest-point sampling on SOAP distances
# ----------------------------------------------------------------------------------------------


def soap_string(elements: Sequence[str], cutoff_A: float = 5.0, l_max: int = 4, n_max: int = 6, atom_sigma_A: float = 0.5) -> str:
    zs = sorted({atomic_numbers[e] for e in elements})
    return (
        f"soap cutoff={cutoff_A} cutoff_transition_width=0.5 l_max={l_max} n_max={n_max} "
        f"atom_sigma={atom_sigma_A} n_species={len(zs)} species_Z={{{' '.join(map(str, zs))}}}"
    )


def average_soap(structures: Sequence[Atoms], elements: Sequence[str], centres: Sequence[Sequence[int]] | None = None, **soap) -> np.ndarray:
    """Per structure, the normalised mean of the normalised SOAP vectors of the chosen centre atoms
    (all atoms when `centres` is None): De et al.'s average-kernel structure descriptor."""
    from quippy import descriptors

    desc = descriptors.Descriptor(soap_string(elements, **soap))
    rows = []
    for k, atoms in enumerate(structures):
        a = atoms.copy()
        a.set_constraint()
        if not a.pbc.any():
            a.pbc = True
        out = desc.calc(a)
        data = np.asarray(out["data"], dtype=float)
        ci = np.asarray(out["ci"], dtype=int) - 1  # quippy centre indices are 1-based
        if centres is not None:
            keep = np.isin(ci, np.asarray(centres[k], dtype=int))
            data = data[keep]
        if len(data) == 0:
            raise ValueError(f"structure {k}: no SOAP centres selected")
        data /= np.linalg.norm(data, axis=1, keepdims=True)
        v = data.mean(axis=0)
        rows.append(v / np.linalg.norm(v))
    return np.array(rows)


def soap_distances(vectors: np.ndarray) -> np.ndarray:
    """Kernel distance d_ij = sqrt(2 − 2 k_ij) with k the dot product of normalised vectors."""
    k = np.clip(vectors @ vectors.T, -1.0, 1.0)
    return np.sqrt(np.clip(2.0 - 2.0 * k, 0.0, None))


def farthest_point_sampling(distances: np.ndarray, k: int, first: int | None = None) -> list[int]:
    """Indices of k points chosen greedily, each the farthest from those already chosen.

    The first point is `first`, else the one farthest from all others on average (deterministic)."""
    n = len(distances)
    if n == 0 or k <= 0:
        return []
    k = min(k, n)
    start = int(np.argmax(distances.mean(axis=1))) if first is None else int(first)
    chosen = [start]
    nearest = distances[start].copy()
    while len(chosen) < k:
        nearest[chosen] = -1.0
        nxt = int(np.argmax(nearest))
        chosen.append(nxt)
        nearest = np.minimum(nearest, distances[nxt])
    return chosen


def fps_structures(structures: Sequence[Atoms], k: int, elements: Sequence[str], centres=None, **soap) -> list[int]:
    """FPS of structures on SOAP distances (thesis: 3 placements per intermediate)."""
    if len(structures) <= k:
        return list(range(len(structures)))
    return farthest_point_sampling(soap_distances(average_soap(structures, elements, centres, **soap)), k)


# ----------------------------------------------------------------------------------------------
# Like-atom permutations (block 6)
# ----------------------------------------------------------------------------------------------


def _mic_sq_distances(initial: Atoms, final: Atoms, src: list[int], dst: list[int]) -> np.ndarray:
    """Squared minimum-image distances between initial atom src[i] and final atom dst[j]."""
    d = final.positions[dst][None, :, :] - initial.positions[src][:, None, :]
    vec, _ = find_mic(d.reshape(-1, 3), initial.cell, pbc=initial.pbc)
    return (vec**2).sum(axis=1).reshape(len(src), len(dst))


def count_permutations(symbols: Sequence[str]) -> int:
    """Number of like-atom permutations: the product of n_e! over elements."""
    counts: dict[str, int] = {}
    for s in symbols:
        counts[s] = counts.get(s, 0) + 1
    return math.prod(math.factorial(c) for c in counts.values())


def like_atom_permutations(
    initial: Atoms,
    final: Atoms,
    adsorbate_indices: Sequence[int],
    limit: int = 24,
    keep: int = 6,
    max_group: int = 8,
) -> list[tuple[list[int], float]]:
    """Reorderings of the final state's like adsorbate atoms (thesis §3.4.3), each with its geometric
    distance to the initial state (root of summed squared minimum-image displacements of the adsorbate).

    Returns [(order, distance_A)] where `final[order]` is the permuted final state (slab indices
    unchanged); the identity comes first when all are kept. When the count exceeds `limit`, only the
    `keep` geometrically closest are returned, closest first (pre-filter). Groups larger than
    `max_group` atoms of one element are refused (n! orderings)."""
    if initial.get_chemical_symbols() != final.get_chemical_symbols():
        raise ValueError("initial and final states must have the same atoms in the same order")
    ads = list(adsorbate_indices)
    symbols = [initial[i].symbol for i in ads]
    groups: dict[str, list[int]] = {}
    for i, s in zip(ads, symbols):
        groups.setdefault(s, []).append(i)
    for s, g in groups.items():
        if len(g) > max_group:
            raise ValueError(f"{len(g)} {s} atoms: {math.factorial(len(g))} orderings are too many to screen")
    total = count_permutations(symbols)
    want = total if total <= limit else keep

    # per element: each ordering of the group with its summed squared displacement (costs add up)
    per_group = []
    for g in groups.values():
        sq = _mic_sq_distances(initial, final, g, g)
        options = [(float(sum(sq[i, p[i]] for i in range(len(g)))), [g[j] for j in p]) for p in itertools.permutations(range(len(g)))]
        # only the `want` cheapest per group can appear in the overall `want` cheapest
        per_group.append((g, options if total <= limit else heapq.nsmallest(want, options, key=lambda o: o[0])))

    combos = []
    for choice in itertools.product(*[opts for _, opts in per_group]):
        order = list(range(len(final)))
        cost = 0.0
        for (g, _), (c, mapped) in zip(per_group, choice):
            cost += c
            for dst, src in zip(g, mapped):
                order[dst] = src
        combos.append((order, math.sqrt(cost)))
    if total > limit:
        combos = heapq.nsmallest(want, combos, key=lambda o: o[1])
    return combos


def apply_order(atoms: Atoms, order: Sequence[int]) -> Atoms:
    """atoms[order] keeping constraints (valid when the order only permutes unconstrained atoms) and info."""
    out = atoms[list(order)]
    out.set_constraint([c.copy() for c in atoms.constraints])
    out.info = dict(atoms.info)
    return out


# ----------------------------------------------------------------------------------------------
# Interpolated images (block 6, before iterating)
# ----------------------------------------------------------------------------------------------


def interpolated_images(initial: Atoms, final: Atoms, n: int) -> list[Atoms]:
    """n images linearly interpolated (minimum image) between two endpoints, endpoints excluded."""
    if initial.get_chemical_symbols() != final.get_chemical_symbols():
        raise ValueError("initial and final states must have the same atoms in the same order")
    d, _ = find_mic(final.positions - initial.positions, initial.cell, pbc=initial.pbc)
    out = []
    for k in range(1, n + 1):
        img = initial.copy()
        img.positions = initial.positions + d * k / (n + 1)
        img.info = {**initial.info, "config_type": "interpolated_image", "image_fraction": k / (n + 1)}
        out.append(img)
    return out
