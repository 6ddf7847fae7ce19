"""Sampling for blocks 3-6: dimer spacing, placements, FPS on SOAP, like-atom permutations."""
import math

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from reactforge.workflows import sampling as S


def emt_forces(atoms):
    a = atoms.copy()
    a.calc = EMT()
    return a.get_forces()


def test_element_pairs_thesis_count():
    assert len(S.element_pairs(["C", "O", "H", "O"])) == 6  # thesis: 6 pairs × 4 = 24 dimers


def test_dimer_pairs_with_and_without_the_surface():
    # H2 on ZnO: H-H, H-O and H-Zn by default; H-H only as the thesis counts them
    assert S.dimer_pairs(["Zn", "O", "H"], ["H"]) == [("H", "H"), ("H", "O"), ("H", "Zn")]
    assert S.dimer_pairs(["Zn", "O", "H"], ["H"], with_surface=False) == [("H", "H")]
    # thesis: CO2 + H2 on In2O3 -> dimers for the C, H, O pairs (24 with 4 each), none with In
    assert S.dimer_pairs(["In", "O", "C", "H"], ["C", "H", "O"], with_surface=False) == [
        ("C", "C"), ("C", "H"), ("C", "O"), ("H", "H"), ("H", "O"), ("O", "O")]
    assert len(S.dimer_pairs(["In", "O", "C", "H"], ["C", "H", "O"])) == 6 + 3


def test_shortest_dimer_respects_force_bound():
    r = S.shortest_dimer_distance(emt_forces, "C", "O", max_force_eV_per_A=20.0)
    f_at = S.dimer_axial_force(emt_forces, "C", "O", r, 12.0)
    f_inside = S.dimer_axial_force(emt_forces, "C", "O", r - 0.02, 12.0)
    assert f_at <= 20.0 < f_inside
    # a stricter bound keeps atoms further apart
    assert S.shortest_dimer_distance(emt_forces, "C", "O", max_force_eV_per_A=5.0) > r


def test_failing_reference_counts_as_too_close():
    def picky(atoms):
        if atoms.get_distance(0, 1) < 0.8:
            raise RuntimeError("SCF failed")
        return emt_forces(atoms)

    r = S.shortest_dimer_distance(picky, "H", "H", max_force_eV_per_A=1e6)
    assert 0.8 <= r < 0.85


def test_make_dimers_spacing_and_weights():
    dimers = S.make_dimers(emt_forces, ["H", "O", "H"], per_pair=4, max_force_eV_per_A=20.0, max_distance_A=3.5)
    assert len(dimers) == 3 * 4
    for d in dimers:
        assert d.info["energy_weight"] == d.info["force_weight"] == 0.2
        assert d.info["config_type"] == "dimer" and not d.pbc.any()
    by_pair = {}
    for d in dimers:
        by_pair.setdefault(tuple(d.get_chemical_symbols()), []).append(d.get_distance(0, 1))
    for pair, rs in by_pair.items():
        assert rs == sorted(rs) and rs[-1] == pytest.approx(3.5)
        assert np.allclose(np.diff(rs), np.diff(rs)[0])
        assert S.dimer_axial_force(emt_forces, *pair, rs[0], 12.0) <= 20.0


def mgo_vacancy():
    from reactforge.schemas.protocol import Protocol
    from reactforge.workflows.catalysis_build import build_system

    p = Protocol.model_validate({
        "name": "m",
        "bulk": {"name": "MgO", "crystalstructure": "rocksalt", "a_A": 4.21},
        "surface": {"miller": [1, 0, 0], "layers": 1, "size": [[1, 1], [-1, 1]], "vacuum_A": 7.0,
                    "fixed_bottom_layers": 1},
        "active_site": {"kind": "vacancy", "element": "O"},
        "intermediates": {"CO2": {"fragments": [{"molecule": "CO2", "position_A": [0, 0, 2.0]}]}},
        "blocks": [0],
    })
    return build_system(p)


def test_placements_stay_near_the_active_site():
    s = mgo_vacancy()
    n = len(s.site_slab)
    ads = s.intermediates["CO2"][n:]
    placed = S.place_adsorbate(s.site_slab, ads, s.site_position, 8, radius_A=3.0, rng=np.random.default_rng(1))
    assert len(placed) == 8
    for a in placed:
        assert a.get_chemical_symbols() == s.site_slab.get_chemical_symbols() + ["C", "O", "O"]
        assert np.allclose(a.positions[:n], s.site_slab.positions)
        assert S.min_adsorbate_slab_distance(a, n) >= 0.9
        site = np.asarray(a.info["site_position_A"])
        assert S._xy_mic_distance(a.cell, s.site_position, site) <= 3.0
        assert isinstance(a.constraints[0], FixAtoms)
        # the molecule keeps its shape
        assert a.get_distance(n, n + 1, mic=True) == pytest.approx(ads.get_distance(0, 1), abs=1e-6)
    assert len({tuple(np.round(a.positions[n], 3)) for a in placed}) > 1
    assert S.sites_near(s.site_slab, s.site_position, radius_A=0.1)  # the vacancy itself is a site


def test_fps_picks_extremes_on_a_line():
    x = np.array([0.0, 0.1, 0.2, 5.0, 10.0])
    d = np.abs(x[:, None] - x[None, :])
    assert S.farthest_point_sampling(d, 3) == [4, 0, 3]
    assert S.farthest_point_sampling(d, 2, first=1) == [1, 4]
    assert sorted(S.farthest_point_sampling(d, 10)) == [0, 1, 2, 3, 4]


def test_fps_on_soap_skips_duplicates():
    s = mgo_vacancy()
    n = len(s.site_slab)
    base = s.intermediates["CO2"]
    other = base.copy()
    other.positions[n:] += [1.5, 1.5, 0.5]
    tilted = base.copy()
    tilted.positions[n + 1] += [0.0, 0.8, -0.6]
    structures = [base, base.copy(), other, tilted]
    centres = [list(range(n, len(a))) for a in structures]
    chosen = S.fps_structures(structures, 3, s.elements, centres=centres)
    assert len(set(chosen)) == 3
    assert 2 in chosen and 3 in chosen
    assert not {0, 1} <= set(chosen)


def test_permutations_all_when_few():
    init = Atoms("Pt2H2O", positions=[[0, 0, 0], [3, 0, 0], [0, 0, 2], [1, 0, 2], [2, 0, 2]], cell=[10] * 3, pbc=True)
    fin = init.copy()
    fin.positions[[2, 3]] = fin.positions[[3, 2]]  # the H atoms swapped places
    perms = S.like_atom_permutations(init, fin, [2, 3, 4], limit=24)
    assert len(perms) == 2
    assert perms[0][0] == [0, 1, 2, 3, 4]  # identity first
    assert perms[0][1] == pytest.approx(math.sqrt(2.0))
    best = min(perms, key=lambda p: p[1])
    assert best[0] == [0, 1, 3, 2, 4] and best[1] == pytest.approx(0.0)
    assert np.allclose(S.apply_order(fin, best[0]).positions, init.positions)


def test_prefilter_keeps_the_geometrically_closest():
    rng = np.random.default_rng(3)
    pos = rng.uniform(0, 8, (7, 3))
    init = Atoms("PtH4O2", positions=pos, cell=[8] * 3, pbc=True)
    fin = init.copy()
    fin.positions[1:] += rng.normal(0, 0.6, (6, 3))
    ads = list(range(1, 7))
    assert S.count_permutations(init.get_chemical_symbols()[1:]) == 48
    every = S.like_atom_permutations(init, fin, ads, limit=48)
    assert len(every) == 48 and len({tuple(o) for o, _ in every}) == 48
    kept = S.like_atom_permutations(init, fin, ads, limit=10, keep=5)
    assert len(kept) == 5
    brute = sorted(d for _, d in every)[:5]
    assert [d for _, d in kept] == pytest.approx(brute)
    # each kept order only exchanges atoms of the same element
    for order, _ in kept:
        assert [fin[i].symbol for i in order] == fin.get_chemical_symbols()


def test_permutation_distance_uses_minimum_image():
    init = Atoms("H2", positions=[[0.1, 0, 0], [5, 0, 0]], cell=[10] * 3, pbc=True)
    fin = Atoms("H2", positions=[[9.9, 0, 0], [5, 0, 0]], cell=[10] * 3, pbc=True)
    perms = dict((tuple(o), d) for o, d in S.like_atom_permutations(init, fin, [0, 1]))
    assert perms[(0, 1)] == pytest.approx(0.2)


def test_interpolated_images_cross_the_boundary():
    init = Atoms("H", positions=[[0.2, 0, 0]], cell=[10] * 3, pbc=True)
    fin = Atoms("H", positions=[[9.8, 0, 0]], cell=[10] * 3, pbc=True)
    imgs = S.interpolated_images(init, fin, 3)
    assert len(imgs) == 3
    assert np.allclose([im.positions[0, 0] for im in imgs], [0.1, 0.0, -0.1])
    assert imgs[1].info["config_type"] == "interpolated_image"
