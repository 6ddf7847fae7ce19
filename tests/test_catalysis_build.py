"""Structures built from a catalysis protocol: bulk, slab, vacancy, intermediates, block-0 cells."""
from pathlib import Path

import numpy as np
import pytest
from ase.constraints import FixAtoms
from ase.io import write

from reactforge.schemas.protocol import Protocol, SurfaceSpec, VacancySite, load_protocol
from reactforge.workflows.catalysis_build import (
    atomic_layers,
    build_bulk,
    build_slab,
    build_system,
    isolated_atoms,
    make_active_site,
    rattled_bulk,
)

ROOT = Path(__file__).resolve().parents[1]


def mgo_protocol(**over) -> Protocol:
    data = {
        "name": "mgo",
        "bulk": {"name": "MgO", "crystalstructure": "rocksalt", "a_A": 4.21},
        "surface": {"miller": [1, 0, 0], "layers": 1, "size": [[1, 1], [-1, 1]], "vacuum_A": 7.0,
                    "fixed_bottom_layers": 1},
        "active_site": {"kind": "vacancy", "element": "O", "rule": "topmost"},
        "intermediates": {
            "H2": {"fragments": [{"molecule": "H2", "position_A": [0, 0, 2.0], "rotation_deg": [0, 90, 0]}]},
            "H+H": {"fragments": [{"symbols": "HH", "positions_A": [[0, 0, 0.6], [2.977, 0, 1.0]]}]},
        },
        "reactions": [{"name": "r", "initial": "H2", "final": "H+H"}],
    }
    data.update(over)
    return Protocol.model_validate(data)


def test_slab_vacancy_and_intermediates():
    s = build_system(mgo_protocol())
    assert s.bulk.get_chemical_formula() == "Mg4O4"
    # √2×√2 R45° cell of the (100) surface, two atomic layers of 8, a1 along x
    assert len(s.slab) == 16
    assert np.allclose(s.slab.cell.lengths()[:2], 4.21 * np.sqrt(2), atol=1e-6)
    assert abs(s.slab.cell[0, 1]) < 1e-9 and abs(s.slab.cell[0, 2]) < 1e-9
    layers = atomic_layers(s.slab)
    assert [len(layer) for layer in layers] == [8, 8]
    fixed = s.slab.constraints[0].index
    assert sorted(fixed) == sorted(layers[0])
    # the vacancy removes a top-layer O; the site is where it was
    assert s.site_slab.get_chemical_formula() == "Mg8O7"
    top_z = s.slab.positions[:, 2].max()
    assert s.site_position[2] == pytest.approx(top_z)
    assert np.min(np.linalg.norm(s.site_slab.positions - s.site_position, axis=1)) > 1.5
    # fixed atoms are still the bottom layer after the removal
    z_fixed = s.site_slab.positions[s.site_slab.constraints[0].index, 2]
    assert np.allclose(z_fixed, s.slab.positions[layers[0][0], 2])
    # intermediates: slab first, adsorbate placed relative to the site
    h2 = s.intermediates["H2"]
    assert h2.get_chemical_symbols()[:15] == s.site_slab.get_chemical_symbols()
    assert h2.get_chemical_symbols()[15:] == ["H", "H"]
    assert np.allclose(h2.positions[15:, 2], s.site_position[2] + 2.0, atol=1e-6)  # rotated flat
    assert h2.get_distance(15, 16) == pytest.approx(0.737, abs=0.01)
    hh = s.intermediates["H+H"]
    assert np.allclose(hh.positions[15] - s.site_position, [0, 0, 0.6])
    assert s.adsorbate_indices("H+H") == [15, 16]
    assert s.elements == ["H", "Mg", "O"]


def test_fixed_bottom_atoms_and_vacancy_by_index():
    p = mgo_protocol()
    b = build_bulk(p.bulk)
    slab = build_slab(b, SurfaceSpec(miller=(1, 0, 0), layers=1, size=(1, 1), vacuum_A=6.0, fixed_bottom_atoms=3))
    assert len(slab.constraints[0].index) == 3
    assert slab.positions[slab.constraints[0].index, 2].max() <= np.sort(slab.positions[:, 2])[2] + 1e-9
    free = next(i for i in range(len(slab)) if i not in slab.constraints[0].index)
    site_slab, pos = make_active_site(slab, VacancySite(element="O", index=free) if slab[free].symbol == "O"
                                      else VacancySite(element="Mg", index=free))
    assert len(site_slab) == len(slab) - 1
    assert np.allclose(pos, slab.positions[free])


def test_bad_structures_raise():
    p = mgo_protocol()
    b = build_bulk(p.bulk)
    slab = build_slab(b, p.surface)
    with pytest.raises(ValueError, match="no N atom"):
        make_active_site(slab, VacancySite(element="N"))
    with pytest.raises(ValueError, match="fix all"):
        build_slab(b, SurfaceSpec(miller=(1, 0, 0), layers=1, fixed_bottom_layers=2))


def test_intermediate_from_file_must_match_slab(tmp_path):
    s = build_system(mgo_protocol())
    good = s.intermediates["H+H"].copy()
    write(tmp_path / "hh.extxyz", good)
    bad = good[::-1]
    write(tmp_path / "bad.extxyz", bad)
    p = mgo_protocol(intermediates={"H2": {"file": str(tmp_path / "hh.extxyz")},
                                    "X": {"file": str(tmp_path / "bad.extxyz")}}, reactions=[], blocks=[0])
    with pytest.raises(ValueError, match="must start with"):
        build_system(p)
    p = mgo_protocol(intermediates={"H2": {"file": "hh.extxyz"}}, reactions=[], blocks=[0])
    p._base_dir = tmp_path
    built = build_system(p).intermediates["H2"]
    assert np.allclose(built.positions, good.positions)
    assert isinstance(built.constraints[0], FixAtoms)


def test_reaction_atoms_must_line_up(tmp_path):
    s = build_system(mgo_protocol())
    write(tmp_path / "co.extxyz", s.intermediates["H2"][:-1] + s.intermediates["H2"][-1:].copy())
    p = mgo_protocol(intermediates={
        "A": {"file": str(tmp_path / "co.extxyz")},
        "B": {"fragments": [{"molecule": "O2", "position_A": [0, 0, 2]}]}},
        reactions=[{"name": "r", "initial": "A", "final": "B"}])
    with pytest.raises(ValueError, match="same atoms"):
        build_system(p)


def test_block0_structures():
    p = mgo_protocol()
    b = build_bulk(p.bulk)
    iso = isolated_atoms(["O", "Mg", "O", "H"], box_A=10.0)
    assert [a.get_chemical_symbols()[0] for a in iso] == ["H", "Mg", "O"]
    assert all(not a.pbc.any() and a.info["config_type"] == "IsolatedAtom" for a in iso)
    cells = rattled_bulk(b.repeat(2), 10, 0.02, 0.01, seed=1)
    assert len(cells) == 10
    strains, disp = [], []
    for c in cells:
        F = np.linalg.solve(b.repeat(2).cell.array, c.cell.array)  # cell_new = cell_old @ (1 + ε)
        eps = F - np.eye(3)
        assert np.allclose(eps, eps.T, atol=1e-12)
        strains.append(eps[np.triu_indices(3)])
        scaled = b.repeat(2).positions @ F
        disp.append(c.positions - scaled)
    assert np.std(strains) == pytest.approx(0.01, rel=0.35)
    assert np.std(disp) == pytest.approx(0.02, rel=0.15)
    assert len({c.info["rattle_index"] for c in cells}) == 10
    assert not np.allclose(cells[0].positions, cells[1].positions)


def test_quickstart_builds():
    p = load_protocol(ROOT / "examples" / "quickstart.yaml")
    s = build_system(p)
    for r in p.reactions:
        a, b = s.intermediates[r.initial], s.intermediates[r.final]
        assert a.get_chemical_symbols() == b.get_chemical_symbols()
    # no adsorbate atom lands on a slab atom
    n = len(s.site_slab)
    for a in s.intermediates.values():
        assert a.get_all_distances(mic=True)[n:, :n].min() > 0.5


def test_bulk_repeat_does_not_change_the_slab():
    base = mgo_protocol()
    rep = mgo_protocol(bulk={"name": "MgO", "crystalstructure": "rocksalt", "a_A": 4.21, "repeat": [2, 2, 2]})
    a, b = build_system(base), build_system(rep)
    assert len(b.bulk) == 8 * len(a.bulk)
    assert len(a.slab) == len(b.slab) == 16
