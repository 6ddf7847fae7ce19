"""A run's files open in the field's own tools without conversion (issue 19): mace_run_train and gap_fit
train on dataset.xyz as the store writes it, `ase db labels.db` shows energy and fmax, and the project's
own readers still get the labels and provenance back."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.db import connect
from ase.io import read

from reactforge.engine.store import Store
from reactforge.schemas.results import SinglePointResult
from reactforge.tasks.structures import plain_atoms
from reactforge.tasks.train import split_training_set

BIN = Path(sys.executable).parent


def _labelled_store(run_dir: Path, training_set) -> Store:
    """A store labelled as a run labels it: bulk, slab, a down-weighted dimer-like config, the E0 atom."""
    store = Store(run_dir)
    for i, a in enumerate(training_set[:4] + training_set[10:12] + training_set[-1:]):
        stress = a.info.get("REF_stress")
        result = SinglePointResult(atoms=plain_atoms(a), energy_eV=a.info["REF_energy"],
                                   forces_eV_per_A=a.arrays["REF_forces"].tolist(),
                                   stress_eV_per_A3=None if stress is None else list(stress), reference="emt")
        weight = 0.2 if i == 5 else 1.0
        store.add_label(result, block="initial", iteration=0, reason="test", task=f"t{i:02d}",
                        energy_weight=weight, force_weight=weight, config_type=a.info["config_type"])
    return store


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from conftest import make_emt_cu_training_set

    run_dir = tmp_path_factory.mktemp("run")
    _labelled_store(run_dir, make_emt_cu_training_set()).export_dataset(sigmas=(0.002, 0.02, 0.02))
    return run_dir


def test_dataset_tags_and_weights_under_the_tools_keys(run_dir):
    frames = read(run_dir / "dataset.xyz", ":")
    iso = [a for a in frames if len(a) == 1]
    assert [a.info["config_type"] for a in iso] == ["IsolatedAtom"]  # written "isolated_atom" by the labeller
    light = [a for a in frames if a.info["energy_weight"] == 0.2]
    assert len(light) == 1
    a = light[0]
    assert a.info["config_energy_weight"] == a.info["config_forces_weight"] == 0.2
    assert a.info["energy_sigma"] == pytest.approx(0.002 * np.sqrt(len(a)) / 0.2)
    assert a.info["force_sigma"] == pytest.approx(0.02 / 0.2)
    # the project's trainers read it too: the E0 atom under either spelling
    configs, isolated = split_training_set(frames)
    assert list(isolated) == [29] and len(configs) == len(frames) - 1


def test_labels_db_has_calculator_results_and_provenance(run_dir):
    with connect(run_dir / "labels.db") as db:
        rows = list(db.select())
    row = next(r for r in rows if r.natoms > 1)
    assert row.energy == row.REF_energy and row.block == "initial" and row.task.startswith("t")
    assert row.fmax == pytest.approx(np.sqrt((row.forces ** 2).sum(axis=1)).max())
    p = subprocess.run([BIN / "ase", "db", run_dir / "labels.db", "-c", "id,energy,fmax,block,task"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    header = p.stdout.splitlines()[0]
    assert "energy" in header and "fmax" in header
    assert f"{row.energy:.3f}" in p.stdout
    # the store's own reader: labels back as REF_* keys, no calculator left on the structures
    back = {a.info["task"]: a for a in Store(run_dir).training_set()}
    assert np.allclose(back[row.task].arrays["REF_forces"], row.forces) and back[row.task].calc is None


@pytest.mark.timeout(120)
def test_mace_run_train_reads_the_dataset_unmodified(run_dir, tmp_path):
    shutil.copy(run_dir / "dataset.xyz", tmp_path)
    cmd = [BIN / "mace_run_train", "--name=m", "--train_file=dataset.xyz", "--valid_fraction=0.3",
           "--energy_key=REF_energy", "--forces_key=REF_forces", "--E0s=isolated", "--model=MACE",
           "--hidden_irreps=8x0e", "--max_L=0", "--max_ell=1", "--correlation=2", "--r_max=4.0",
           "--num_interactions=1", "--max_num_epochs=1", "--batch_size=4", "--device=cpu",
           "--default_dtype=float64", "--seed=1"]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=110)
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-3000:]
    assert (tmp_path / "m.model").is_file()
    # the E0s came from the config tagged IsolatedAtom (with another tag MACE finds none and stops)
    log += "".join(f.read_text() for f in (tmp_path / "logs").glob("*.log"))
    assert "Using isolated atom energies from training file" in log, log[-3000:]


@pytest.mark.timeout(120)
def test_gap_fit_reads_the_dataset_unmodified(run_dir, tmp_path):
    shutil.copy(run_dir / "dataset.xyz", tmp_path)
    soap = ("soap l_max=2 n_max=3 atom_sigma=0.5 cutoff=3.5 cutoff_transition_width=0.5 delta=0.2 "
            "covariance_type=dot_product zeta=2 n_sparse=10 sparse_method=cur_points")
    cmd = [BIN / "gap_fit", "at_file=dataset.xyz", "gap={" + soap + "}", "default_sigma={0.002 0.02 0.02 0.0}",
           "e0_method=isolated", "energy_parameter_name=REF_energy", "force_parameter_name=REF_forces",
           "config_type_parameter_name=config_type", "do_copy_at_file=F", "gp_file=gap.xml", "rnd_seed=1"]
    p = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=110)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    assert (tmp_path / "gap.xml").is_file()


def test_paths_band_opens_in_ase_nebplot(tmp_path):
    from ase.build import add_adsorbate, fcc100
    from ase.calculators.emt import EMT

    from reactforge.workflows.catalysis import band_frames

    images, energies, forces = [], [], []
    for x in np.linspace(0.0, 1.0, 5):  # an adatom hopping hollow to hollow, as the store's NEB results carry it
        s = fcc100("Cu", size=(2, 2, 2), a=3.61, vacuum=6.0)
        add_adsorbate(s, "Cu", 1.7, "hollow", offset=(x, 0))
        s.info.pop("adsorbate_info")  # a dict: extxyz has no column for it
        s.calc = EMT()
        energies.append(s.get_potential_energy())
        forces.append(s.get_forces().tolist())
        s.calc = None
        images.append(s)
    path = Store(tmp_path / "run").write_xyz("paths/hop.xyz",
                                             band_frames(images, {"energy_mlff_eV": energies}, energies, forces))
    back = read(path, ":")
    assert [a.get_potential_energy() for a in back] == pytest.approx(energies)
    p = subprocess.run([BIN / "ase", "nebplot", "--nimages", "5", path, tmp_path / "band.pdf"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "band.pdf").stat().st_size > 0


def test_task_results_are_written_as_extxyz_with_energies(tmp_path):
    """The `tasks` workflow's results/<job>.xyz: every structure of a result, band energies and forces
    as calculator results, so `ase gui` and `ase nebplot` read a NEB job's band."""
    from ase.build import molecule
    from ase.io import write

    from reactforge.schemas.results import NEBResult
    from reactforge.workflows.batch import result_frames

    images = [molecule("H2") for _ in range(3)]
    for k, a in enumerate(images):
        a.positions[1, 2] += 0.1 * k
    forces = [np.full((2, 3), 0.01 * k).tolist() for k in range(3)]
    res = NEBResult(images=images, energies_eV=[-1.0, -0.7, -0.9], forward_barrier_eV=0.3, reaction_energy_eV=0.1,
                    converged=True, steps=4, max_sigma_eV=0.0, fmax_eV_per_A=0.02, forces_eV_per_A=forces)
    write(tmp_path / "band.xyz", result_frames(res))
    back = read(tmp_path / "band.xyz", ":")
    assert [a.info["index"] for a in back] == [0, 1, 2] and {a.info["field"] for a in back} == {"images"}
    assert [a.get_potential_energy() for a in back] == [-1.0, -0.7, -0.9]
    assert np.allclose(back[2].get_forces(), 0.02)
