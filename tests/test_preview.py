"""`reactforge check` writes the structures it built (workflows/preview.py) before any reference call:
bulk, slab with indices and the active site, intermediates, placements, NEB ends with their like-atom
orderings, and an overview figure; `--no-preview` writes nothing; a run directory holding only the
preview is still a new run's."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from ase.io import read
from reactforge.engine.cli import load_protocol, main
from reactforge.engine.store import Store
from reactforge.workflows import catalysis_build as build
from reactforge.workflows import sampling
from reactforge.workflows.preview import file_name

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """(run directory, stdout) of one `check` of the quickstart."""
    run_dir = tmp_path_factory.mktemp("check") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["check", "--run-dir", str(run_dir), str(QUICKSTART)])
    assert rc == 0, out.getvalue()
    return run_dir, out.getvalue()


@pytest.fixture(scope="module")
def system():
    _, protocol = load_protocol(QUICKSTART)
    return protocol, build.build_system(protocol)


def test_check_writes_every_file_and_names_them(checked):
    run_dir, out = checked
    folder = run_dir / "preview"
    expected = ["bulk.xyz", "slab.xyz", "site_slab.xyz", "intermediates/H2_at_vacancy.xyz", "intermediates/H2_at_Zn.xyz",
                "intermediates/ZnH+OH.xyz", "placements.xyz", "neb/H2-migration.xyz", "neb/H2-heterolytic.xyz",
                "overview.png"]
    for name in expected:
        assert (folder / name).is_file(), name
        assert f"  {name}" in out.splitlines()
    assert f"preview (structures as built, before any reference call) in {folder}:" in out
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted(expected)
    for path in folder.rglob("*.xyz"):
        assert read(path, ":", format="extxyz"), path


def test_slab_indices_and_the_active_site_are_the_ones_check_names(checked, system):
    run_dir, _ = checked
    protocol, built = system
    slab = read(run_dir / "preview" / "slab.xyz")
    assert len(slab) == len(built.slab)
    assert slab.arrays["index"].tolist() == list(range(len(slab)))
    assert np.flatnonzero(slab.arrays["fixed"]).tolist() == build.fixed_indices(built.slab)
    assert slab.arrays["layer"].min() == 0 and slab.arrays["layer"].max() == 3  # two Zn-O double layers
    named = re.search(r"vacancy: slab atom (\d+) \((\w+)\) removed", "\n".join(build.describe_site(protocol, built)))
    site, element = int(named.group(1)), named.group(2)
    assert np.flatnonzero(slab.arrays["active_site"]).tolist() == [site]
    assert slab[site].symbol == element == slab.info["site_element"] and slab.info["site_atom_index"] == site
    assert slab.arrays["layer"][site] == 0  # the rule was `topmost`

    site_slab = read(run_dir / "preview" / "site_slab.xyz")
    assert len(site_slab) == len(slab) - 1 and not site_slab.arrays["active_site"].any()  # the atom is gone
    assert np.allclose(site_slab.info["site_position_A"], slab.positions[site])


def test_every_intermediate_is_the_site_slab_plus_its_adsorbate(checked, system):
    run_dir, _ = checked
    protocol, built = system
    n_slab = len(built.site_slab)
    for name, spec in protocol.intermediates.items():
        atoms = read(run_dir / "preview" / "intermediates" / f"{file_name(name)}.xyz")
        assert atoms.info["intermediate"] == name
        n_ads = len(build.fragment_atoms(spec.fragments[0]))
        assert len(atoms) == n_slab + n_ads
        assert atoms.get_chemical_symbols()[:n_slab] == built.site_slab.get_chemical_symbols()
        assert np.flatnonzero(atoms.arrays["adsorbate"]).tolist() == list(range(n_slab, n_slab + n_ads))


def test_placements_are_one_per_intermediate_on_the_site_slab(checked, system):
    run_dir, _ = checked
    protocol, built = system
    placed = read(run_dir / "preview" / "placements.xyz", ":")
    assert len(placed) == protocol.parameters.b3_adsorbate_seed.fps_per_intermediate * len(protocol.intermediates)
    n_slab = len(built.site_slab)
    for atoms in placed:
        assert atoms.info["config_type"] == "placement"
        assert np.allclose(atoms.positions[:n_slab], built.site_slab.positions)
        assert sampling.min_adsorbate_slab_distance(atoms, n_slab) >= 0.9


def test_neb_file_holds_both_ends_and_both_orderings_of_the_two_h(checked, system):
    run_dir, _ = checked
    protocol, built = system
    for r in protocol.reactions:
        frames = read(run_dir / "preview" / "neb" / f"{r.name}.xyz", ":")
        initial, final = built.intermediates[r.initial], built.intermediates[r.final]
        assert [f.info["end"] for f in frames] == ["initial", "final", "final", "final"]
        assert np.allclose(frames[0].positions, initial.positions) and np.allclose(frames[1].positions, final.positions)
        n = len(initial)
        # two like H atoms: the identity and the swap, both kept (2 ≤ permutation_limit)
        assert [f.info["permutation"] for f in frames[2:]] == [0, 1]
        assert [list(f.info["order"]) for f in frames[2:]] == [list(range(n)), [*range(n - 2), n - 1, n - 2]]
        assert np.allclose(frames[3].positions[-2:], final.positions[[-1, -2]])


def test_overview_is_a_png_image(checked):
    from PIL import Image

    path = checked[0] / "preview" / "overview.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width > 200 and height > 200


def test_a_run_directory_holding_only_the_preview_is_a_new_run(checked, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "preview").mkdir(parents=True)
    (run_dir / "preview" / "overview.png").write_bytes((checked[0] / "preview" / "overview.png").read_bytes())
    assert Store.claim(run_dir, QUICKSTART.read_text(), force_new=False) == "new"
    assert (run_dir / "preview" / "overview.png").is_file()


def test_no_preview_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["check", "--no-preview", "--run-dir", str(run_dir), str(QUICKSTART)]) == 0
    assert "before any reference call" not in capsys.readouterr().out
    assert not run_dir.exists()


def test_a_preview_folder_that_is_not_a_preview_is_left_alone(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["check", "--preview", str(mine), "--run-dir", str(tmp_path / "run"), str(QUICKSTART)]) == 2
    assert "holds no preview" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
