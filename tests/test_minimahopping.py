"""reactforge.tasks.minimahopping: ASE's MinimaHopping with the MLFF, run in its own working directory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase.build import add_adsorbate, fcc111
from ase.io import read

from reactforge.schemas.results import MinimaHoppingResult
from reactforge.schemas.tasks import MinimaHoppingSpec
from reactforge.tasks.context import TaskContext
from reactforge.tasks.minimahopping import run
from reactforge.tasks.mlff import load_mlff


def _adatom_slab():
    s = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=8.0)
    add_adsorbate(s, "Cu", 2.0, "fcc")
    return s


FROZEN = [i for i, tag in enumerate(_adatom_slab().get_tags()) if tag >= 2]  # two bottom layers


def _check_minimum(model, minimum, energy, fmax):
    a = minimum.copy()
    a.calc = load_mlff(model)
    assert a.get_potential_energy() == pytest.approx(energy, abs=1e-6)
    f = a.get_forces()
    assert np.linalg.norm(f, axis=1).max() < fmax


def test_first_minimum_is_the_relaxed_start(tiny_gap_model, tmp_path):
    start = _adatom_slab()
    spec = MinimaHoppingSpec(model=tiny_gap_model, n_minima=1, fixed_atoms=FROZEN, fmax_eV_per_A=0.05)
    result = run(spec, [start], TaskContext(workdir=tmp_path))
    assert len(result.minima) == len(result.energies_eV) == len(result.sigma_per_minimum_eV) == 1
    assert result.hops == 0
    _check_minimum(tiny_gap_model, result.minima[0], result.energies_eV[0], 0.05)
    np.testing.assert_allclose(result.minima[0].positions[FROZEN], start.positions[FROZEN], atol=1e-10)
    assert 0 < result.sigma_per_minimum_eV[0] < 0.05
    # ASE's files went to the task's folder, not the process's working directory
    assert list(tmp_path.glob("minimahopping-*/qn00000.traj"))
    assert MinimaHoppingResult.model_validate_json(result.model_dump_json()).energies_eV == result.energies_eV


def test_hop_limit_is_respected_and_the_seed_reproduces(tiny_gap_model, tmp_path):
    spec = MinimaHoppingSpec(
        model=tiny_gap_model, n_minima=50, max_hops=1, mdmin=1, T0_K=500.0, fixed_atoms=FROZEN, seed=2
    )
    runs = [run(spec, [_adatom_slab()], TaskContext(workdir=tmp_path / str(k))) for k in range(2)]
    for k, result in enumerate(runs):
        assert result.hops == 1
        assert 1 <= len(result.minima) <= 2
        assert len(list((tmp_path / str(k)).glob("minimahopping-*/md*.traj"))) == 1
    md_ends = [read(next((tmp_path / str(k)).glob("minimahopping-*/md00001.traj")), -1) for k in range(2)]
    np.testing.assert_array_equal(md_ends[0].positions, md_ends[1].positions)
    assert runs[0].energies_eV == runs[1].energies_eV


@pytest.mark.slow
def test_finds_fcc_and_hcp_adatom_minima(tiny_gap_model, tmp_path):
    """Cu adatom on Cu(111): hopping from the fcc hollow finds a second, distinct minimum (hcp hollow)."""
    spec = MinimaHoppingSpec(
        model=tiny_gap_model, n_minima=2, mdmin=3, T0_K=1500.0, max_hops=15, fixed_atoms=FROZEN, seed=0,
        max_optimisation_steps=300,
    )
    result = run(spec, [_adatom_slab()], TaskContext(workdir=tmp_path))
    assert len(result.minima) >= 2
    for minimum, energy in zip(result.minima, result.energies_eV):
        _check_minimum(tiny_gap_model, minimum, energy, spec.fmax_eV_per_A)
    adatoms = np.array([m.positions[-1] for m in result.minima])
    assert np.linalg.norm(adatoms[1, :2] - adatoms[0, :2]) > 0.5  # moved to another site
    assert abs(result.energies_eV[1] - result.energies_eV[0]) > 1e-3  # a different kind of site


def test_bad_input_is_refused(tiny_gap_model, tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        run(MinimaHoppingSpec(model=tiny_gap_model), [], TaskContext(workdir=tmp_path))
    with pytest.raises(ValueError, match="fixed_atoms"):
        run(MinimaHoppingSpec(model=tiny_gap_model, fixed_atoms=[100]), [_adatom_slab()], TaskContext(workdir=tmp_path))


def test_a_relative_checkpoint_folder_is_found_by_the_search(tiny_gap_model, tmp_path, monkeypatch):
    """A run directory named relative to the working directory (`reactforge run` from the checkout): the
    search's child process runs inside the folder and must not resolve the folder's name from there."""
    monkeypatch.chdir(tmp_path)
    spec = MinimaHoppingSpec(model=tiny_gap_model, n_minima=1, fixed_atoms=FROZEN)
    result = run(spec, [_adatom_slab()], TaskContext(workdir=tmp_path, checkpoint_dir="run/checkpoint"))
    assert len(result.minima) == 1
    assert (tmp_path / "run" / "checkpoint" / "minimahopping" / "minima.traj").is_file()


def test_a_relative_model_path_is_found_by_the_search(tiny_gap_model, tmp_path, monkeypatch):
    """A model a run fitted and kept under runs/<name>/models/ is named relative to the working directory;
    the search's child process runs in its own folder and must still load it."""
    import shutil

    model_dir = tmp_path / "runs" / "r" / "models" / "m"
    model_dir.mkdir(parents=True)
    for p in tiny_gap_model.paths:
        shutil.copy(p, model_dir)
    for extra in Path(tiny_gap_model.paths[0]).parent.glob("gap.xml.sparseX*"):
        shutil.copy(extra, model_dir)
    monkeypatch.chdir(tmp_path)
    relative = tiny_gap_model.model_copy(
        update={"paths": [str(Path("runs/r/models/m") / Path(p).name) for p in tiny_gap_model.paths]})
    spec = MinimaHoppingSpec(model=relative, n_minima=1, fixed_atoms=FROZEN)
    result = run(spec, [_adatom_slab()], TaskContext(workdir=tmp_path / "work", checkpoint_dir="run/checkpoint"))
    assert len(result.minima) == 1
