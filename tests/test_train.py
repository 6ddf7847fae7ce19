"""The train task: gap_fit and mace_run_train on EMT-labelled Cu (real fitters, small settings)."""
from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import read

from conftest import emt_label, tiny_gap_spec
from reactforge.schemas.tasks import GAPModelSpec, TrainSpec, TwoBodyDescriptor
from reactforge.tasks.context import TaskContext
from reactforge.tasks.mlff import load_mlff, sigma_per_atom
from reactforge.tasks.train import TrainingFailed, files_sha256, reference_energies, run, split_training_set
from reactforge.tasks.training.gap import gap_fit_command, gap_fit_invocation, gap_training_images


def _gap_terms(cmd: list[str]) -> list[dict[str, str]]:
    """Descriptor terms of a gap_fit argument list as {key: value} dicts (first key: the descriptor)."""
    gap = next(arg for arg in cmd if arg.startswith("gap={"))[len("gap={") : -1]
    terms = []
    for term in gap.split(" : "):
        name, rest = term.split(" ", 1)
        pairs = re.findall(r"(\w+)=(\{\{[^}]*\}\}|\S+)", rest)
        terms.append({"descriptor": name, **dict(pairs)})
    return terms


def _args(cmd: list[str]) -> dict[str, str]:
    return dict(arg.split("=", 1) for arg in cmd[1:] if not arg.startswith("gap="))


# ---------------------------------------------------------------------------------------------- GAP


def test_gap_reproduces_training_set_better_than_constant(tiny_gap_fit, emt_cu_training_set):
    configs, _ = split_training_set(emt_cu_training_set)
    per_atom = np.array([a.info["REF_energy"] / len(a) for a in configs])
    constant_rmse = 1e3 * per_atom.std()  # best constant-per-atom model
    force_rms = 1e3 * np.sqrt(np.mean(np.concatenate([a.arrays["REF_forces"].ravel() for a in configs]) ** 2))
    assert tiny_gap_fit.n_configs == len(configs) == 18
    assert tiny_gap_fit.train_rmse_energy_meV_per_atom < 0.2 * constant_rmse
    assert tiny_gap_fit.train_rmse_forces_meV_per_A < 0.2 * force_rms
    assert tiny_gap_fit.e0_eV["Cu"] == pytest.approx(emt_cu_training_set[-1].info["REF_energy"])


def test_gap_model_ref_identity(tiny_gap_model):
    xml = Path(tiny_gap_model.paths[0])
    sparse = sorted(xml.parent.glob("gap.xml.sparseX.*"))
    assert xml.name == "gap.xml" and sparse, "sparse points in their own files, named by the model"
    assert [Path(p) for p in tiny_gap_model.paths] == [xml] + sparse
    assert tiny_gap_model.sha256 == files_sha256([xml] + sparse)
    assert tiny_gap_model.model == "gap" and tiny_gap_model.uncertainty == "energy"


def test_gap_model_loads_anywhere_after_copy(tiny_gap_model, tmp_path, monkeypatch):
    """quippy opens sparse-point files relative to the working directory: a model copied elsewhere
    (a run's models/ folder) must load the copied files from any working directory."""
    import shutil

    copy = tmp_path / "models" / "b-1"
    copy.mkdir(parents=True)
    for p in tiny_gap_model.paths:
        shutil.copyfile(p, copy / Path(p).name)
    moved = tiny_gap_model.model_copy(update={"paths": [str(copy / Path(p).name) for p in tiny_gap_model.paths]})
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.05, seed=1)
    e = [_energy(load_mlff(m), atoms) for m in (tiny_gap_model, moved)]
    assert e[0] == pytest.approx(e[1], abs=1e-10)
    # the copy, not the original, is what loads: without its sparse files it cannot
    for f in copy.glob("gap.xml.sparseX.*"):
        f.unlink()
    with pytest.raises(Exception):
        _energy(load_mlff(moved), atoms)


def _energy(calc, atoms):
    a = atoms.copy()
    a.calc = calc
    return a.get_potential_energy()


def test_gap_sigma_small_near_data_large_far_from_it(tiny_gap_model):
    calc = load_mlff(tiny_gap_model)
    near = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    near.rattle(0.05, seed=7)
    sigma_near = sigma_per_atom(calc, near)
    assert sigma_near.shape == (32,)
    assert np.all(sigma_near > 0) and sigma_near.max() < 0.005

    far = near.copy()
    far.set_cell(near.cell * 0.8, scale_atoms=True)  # 20 % compression: never seen in training
    sigma_far = sigma_per_atom(calc, far)
    assert sigma_far.min() > 5 * sigma_near.max()
    assert sigma_far.max() <= 0.1 * (1 + 1e-6), "σ cannot exceed the prior δ = 0.1 eV"

    # per atom: one displaced atom is the most uncertain one
    one = near.copy()
    one.positions[5] += [0.0, 0.0, 0.9]
    sigma_one = sigma_per_atom(calc, one)
    assert sigma_one.argmax() == 5 and sigma_one[5] > 1.5 * np.median(sigma_one)


def _small_set():
    images = []
    for i, lattice in enumerate((3.56, 3.6, 3.64)):
        a = bulk("Cu", "fcc", a=lattice, cubic=True)
        a.rattle(0.05, seed=i)
        images.append(emt_label(a))
    dimer = emt_label(Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.6]]))  # a molecule: no cell at all
    iso = emt_label(Atoms("Cu", cell=[10.0] * 3))
    iso.info["config_type"] = "isolated_atom"
    return images, dimer, iso


def test_dimer_weight_reaches_gap_fit_and_changes_the_fit(tmp_path):
    images, dimer, iso = _small_set()
    spec = TrainSpec(model=tiny_gap_spec().model)
    weighted = dimer.copy()
    weighted.info.update(energy_weight=0.2, force_weight=0.2, config_type="dimer")

    res_w = run(spec, images + [weighted, iso], TaskContext(workdir=tmp_path / "weighted"))
    written = read(tmp_path / "weighted" / "train.xyz", ":")
    assert len(written) == 4, "isolated atoms give E0, they are not fitted"
    d = next(a for a in written if len(a) == 2)
    assert d.info["energy_sigma"] == pytest.approx(5 * 0.002 * np.sqrt(2))
    assert d.info["force_sigma"] == pytest.approx(5 * 0.02)
    assert all("energy_sigma" not in a.info for a in written if len(a) != 2)
    assert written[0].info["REF_virial"].shape == (9,)  # -stress·V for gap_fit

    heavy = dimer.copy()
    heavy.info.update(energy_weight=5.0, force_weight=5.0)
    res_h = run(spec, images + [heavy, iso], TaskContext(workdir=tmp_path / "heavy"))
    assert res_w.model.sha256 != res_h.model.sha256
    assert res_h.train_rmse_energy_meV_per_atom < 20, "the cell-less dimer is fitted like the rest"

    def dimer_force_error(ref):
        a = dimer.copy()
        a.calc = load_mlff(ref)
        return np.abs(a.get_forces() - dimer.arrays["REF_forces"]).max()

    # σ/5 instead of 5σ on the dimer: the fit follows its forces far more closely
    assert dimer_force_error(res_h.model) < 0.5 * dimer_force_error(res_w.model)


def test_two_body_term_and_thesis_defaults_in_command():
    spec = GAPModelSpec(distance_2b=TwoBodyDescriptor())
    cmd = gap_fit_command(spec, [1, 6, 8], {1: -12.5, 6: -241.9, 8: -560.1}, "train.xyz", "gap.xml")
    terms = _gap_terms(cmd)
    pairs = [t for t in terms if t["descriptor"] == "distance_2b"]
    expected = {("1", "1"), ("1", "6"), ("1", "8"), ("6", "6"), ("6", "8"), ("8", "8")}
    assert {(t["Z1"], t["Z2"]) for t in pairs} == expected
    soaps = [t for t in terms if t["descriptor"] == "soap_turbo"]
    # thesis appendix A: double turbo SOAP, one term per cut-off and central species
    assert sorted((t["rcut_hard"], t["rcut_soft"], t["central_index"]) for t in soaps) == [
        (h, s, c) for h, s in (("4.0", "3.5"), ("6.0", "5.5")) for c in ("1", "2", "3")
    ]
    for t in soaps:
        assert t["species_Z"] == "{{1 6 8}}" and t["n_species"] == "3"
        assert t["alpha_max"] == "{{8 8 8}}" and t["l_max"] == "4"
        assert t["atom_sigma_r"] == t["atom_sigma_t"] == "{{0.3 0.3 0.3}}"
        assert (t["basis"], t["scaling_mode"], t["radial_enhancement"]) == ("poly3", "polynomial", "1")
        assert (t["covariance_type"], t["zeta"], t["delta"]) == ("dot_product", "4.0", "0.1")
        assert (t["n_sparse"], t["sparse_method"], t["add_species"]) == ("2500", "cur_points", "F")
    args = _args(cmd)
    assert args["default_sigma"] == "{0.001 0.01 0.01 0.0}"
    assert args["sparse_jitter"] == "1e-08"
    assert args["e0"] == "{H:-12.5:C:-241.9:O:-560.1}"
    assert (args["energy_parameter_name"], args["force_parameter_name"]) == ("REF_energy", "REF_forces")


@pytest.mark.parametrize("symbols", [("Cu", "O"), ("Zn", "O", "H"), ("In", "O", "C", "H")])
def test_thesis_default_command_is_accepted_by_gap_fit(tmp_path, symbols):
    """gap_fit parses the production double-turbo-SOAP line and stops before allocating; with four
    species (In2O3 + CO2/H2) the gap={...} argument is too long for QUIP's command line, so it goes
    through a config file."""
    rng = np.random.default_rng(1)
    images = []
    for i in range(3):
        a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        a.rattle(0.05, seed=int(rng.integers(1000)))
        a = emt_label(a)
        a.symbols = list(symbols) + ["Cu"] * (len(a) - len(symbols))  # labels only need to parse here
        images.append(a)
    configs, _ = split_training_set(images)
    from ase.io import write

    spec = GAPModelSpec(distance_2b=TwoBodyDescriptor())
    write(tmp_path / "train.xyz", gap_training_images(configs, spec))
    species = sorted({int(z) for a in configs for z in a.numbers})
    e0 = {z: -1.0 for z in species}
    cmd = gap_fit_command(spec, species, e0, "train.xyz", "gap.xml") + ["dryrun=T"]
    proc = subprocess.run(gap_fit_invocation(cmd, tmp_path), cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "Exit before major allocations because dryrun is true" in proc.stdout
    assert proc.stdout.count("soap_turbo") >= 2 * len(species)


def test_gap_fit_failure_is_a_clear_error(tmp_path):
    images, _, iso = _small_set()
    spec = tiny_gap_spec()
    spec.model.soap[0].sparse_method = "uniform"  # not defined for soap_turbo: gap_fit aborts
    with pytest.raises(TrainingFailed, match="gap_fit exited"):
        run(spec, images + [iso], TaskContext(workdir=tmp_path))
    assert (tmp_path / "gap_fit.log").exists()


# ---------------------------------------------------------------------------------------------- data checks


def test_reference_energies_least_squares_and_isolated():
    configs = []
    for n_cu, n_o in ((2, 1), (1, 2), (3, 3)):
        a = Atoms(["Cu"] * n_cu + ["O"] * n_o)
        a.info["REF_energy"] = -2.0 * n_cu - 5.0 * n_o
        configs.append(a)
    assert reference_energies(configs, {}) == pytest.approx({29: -2.0, 8: -5.0})
    assert reference_energies(configs, {29: -2.5}) == pytest.approx({8: -4.75, 29: -2.5}, abs=0.3)
    assert reference_energies(configs, {29: -2.5, 8: -1.0}) == {8: -1.0, 29: -2.5}


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a.info.pop("REF_energy"), "REF_energy"),
        (lambda a: a.arrays.pop("REF_forces"), "REF_forces"),
        (lambda a: a.info.update(REF_energy=float("nan")), "not finite"),
        (lambda a: a.info.update(force_weight=-1.0), "force_weight"),
        (lambda a: a.info.update(energy_weight=0.0), "energy_weight"),
        (lambda a: a.info.update(REF_stress=[1.0, 2.0]), "REF_stress"),
        (lambda a: a.info.update(config_type="isolated_atom"), "exactly one atom"),
    ],
)
def test_bad_training_data_is_refused(edit, message):
    images, _, _ = _small_set()
    edit(images[1])
    with pytest.raises(ValueError, match=message):
        split_training_set(images)


def test_only_isolated_atoms_is_refused():
    _, _, iso = _small_set()
    with pytest.raises(ValueError, match="no labelled configurations"):
        split_training_set([iso])


def test_soap_cutoffs_validated():
    from pydantic import ValidationError

    from reactforge.schemas.tasks import SOAPDescriptor

    with pytest.raises(ValidationError, match="rcut_soft_A"):
        SOAPDescriptor(rcut_hard_A=3.0, rcut_soft_A=3.5)


# ---------------------------------------------------------------------------------------------- MACE


def test_mace_training_file_carries_weights_and_stress():
    from reactforge.tasks.training.mace import mace_training_images

    images, dimer, _ = _small_set()
    dimer.info.update(energy_weight=0.2, force_weight=0.2)
    written = mace_training_images(images + [dimer])
    d = written[-1]
    assert (d.info["config_energy_weight"], d.info["config_forces_weight"]) == (0.2, 0.2)
    assert written[0].info["config_energy_weight"] == 1.0
    s = images[0].info["REF_stress"]  # Voigt xx yy zz yz xz xy -> 3x3 row-major
    full = written[0].info["REF_stress"].reshape(3, 3)
    assert full[0, 0] == s[0] and full[1, 2] == full[2, 1] == s[3] and full[0, 1] == s[5]


def test_mace_committee_trains_and_reports_sigma(tiny_mace_fit, emt_cu_training_set):
    ref = tiny_mace_fit.model
    assert ref.model == "mace" and len(ref.paths) == 2
    assert all(Path(p).is_file() and Path(p).name.endswith(".model") for p in ref.paths)
    assert ref.sha256 == files_sha256([Path(p) for p in ref.paths])
    assert tiny_mace_fit.n_configs == 11
    assert np.isfinite(tiny_mace_fit.train_rmse_energy_meV_per_atom)
    cmds = [shlex.split(c) for c in tiny_mace_fit.commands]
    assert [next(x for x in c if x.startswith("--seed=")) for c in cmds] == ["--seed=0", "--seed=1"]
    for c in cmds:
        assert "--energy_key=REF_energy" in c and "--forces_key=REF_forces" in c
        assert "--stress_key=REF_stress" in c  # the bulk cells carry REF_stress
        assert f"--E0s={{29: {emt_cu_training_set[-1].info['REF_energy']!r}}}" in c

    calc = load_mlff(ref)
    a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    a.rattle(0.05, seed=11)
    sigma = sigma_per_atom(calc, a)
    assert sigma.shape == (32,)
    assert np.all(np.isfinite(sigma)) and np.all(sigma > 0)


def test_mace_foundation_model_must_be_a_local_file(tmp_path, emt_cu_training_set):
    from reactforge.schemas.tasks import MACEModelSpec

    spec = TrainSpec(model=MACEModelSpec(foundation_model=str(tmp_path / "missing.model"), committee_size=1))
    with pytest.raises(ValueError, match="foundation_model"):
        run(spec, emt_cu_training_set[:3], TaskContext(workdir=tmp_path))


def test_mace_committee_seeds_validated():
    from pydantic import ValidationError

    from reactforge.schemas.tasks import MACEModelSpec

    with pytest.raises(ValidationError, match="seeds must differ"):
        MACEModelSpec(seeds=[3, 3], committee_size=2)
    with pytest.raises(ValidationError, match="committee_size"):
        TrainSpec.model_validate({"model": {"model": "mace", "seeds": [1, 2], "committee_size": 3}})


def test_mace_fine_tunes_a_local_model_file(tiny_mace_fit, emt_cu_training_set, tmp_path):
    """Fine-tuning (thesis ch. 4) starts from a model file; here one the project trained itself."""
    import torch

    from reactforge.schemas.tasks import MACEModelSpec

    foundation = tiny_mace_fit.model.paths[0]
    spec = TrainSpec(
        model=MACEModelSpec(foundation_model=foundation, committee_size=1, max_num_epochs=1, batch_size=4),
        seed=7,
    )
    result = run(spec, emt_cu_training_set[5:10], TaskContext(workdir=tmp_path))
    cmd = shlex.split(result.commands[0])
    assert f"--foundation_model={Path(foundation).resolve()}" in cmd
    assert not any(c.startswith("--hidden_irreps") for c in cmd), "architecture comes from the file"
    # the E0s recorded are the ones the fine-tuned model carries: the foundation's (mace keeps them)
    from reactforge.tasks.training.mace import model_e0s

    assert result.e0_eV == {"Cu": model_e0s(Path(result.model.paths[0]))[29]} == {"Cu": model_e0s(Path(foundation))[29]}
    before = torch.load(foundation, map_location="cpu", weights_only=False).state_dict()
    after = torch.load(result.model.paths[0], map_location="cpu", weights_only=False).state_dict()
    assert before.keys() == after.keys()
    assert all(before[k].shape == after[k].shape for k in before)
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


def test_a_fitter_killed_by_a_signal_is_transient(tmp_path):
    from reactforge.tasks.errors import TransientError
    from reactforge.tasks.train import run_logged as _run_all_logged

    with pytest.raises(TransientError, match="exited with -9"):
        _run_all_logged([(["sh", "-c", "echo fitting; kill -9 $$"], tmp_path, tmp_path / "fit.log")], {})
    with pytest.raises(TrainingFailed, match="exited with 3"):
        _run_all_logged([(["sh", "-c", "echo ERROR bad input; exit 3"], tmp_path, tmp_path / "fit.log")], {})


def test_pair_terms_only_for_pairs_in_the_data():
    """gap_fit stops on a distance_2b term without data: an H E0 label alone must not create H-H."""
    from ase import Atoms

    from reactforge.schemas.tasks import GAPModelSpec, TwoBodyDescriptor
    from reactforge.tasks.training.gap import distance_2b_terms, pairs_within

    cu2 = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.5]], cell=[10, 10, 10], pbc=True)
    cuh = Atoms("CuH", positions=[[0, 0, 0], [0, 0, 6.0]], cell=[15, 15, 15], pbc=True)  # H beyond the cut-off
    present = pairs_within([cu2, cuh], 4.0)
    assert present == {(29, 29)}
    spec = GAPModelSpec(distance_2b=TwoBodyDescriptor(cutoff_A=4.0))
    terms = distance_2b_terms(spec, [1, 29], present)
    assert len(terms) == 1 and "Z1=29 Z2=29" in terms[0]
    assert len(distance_2b_terms(spec, [1, 29])) == 3


def _emt_cuau(n: int, seed: int) -> list[Atoms]:
    """Rattled Cu3Au cells labelled with EMT: a two-element system (mace's replay needs more than one)."""
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        a = bulk("Cu", "fcc", a=3.7, cubic=True)
        a.symbols[0] = "Au"
        a.rattle(0.05 + 0.02 * i, seed=int(rng.integers(1 << 30)))
        a.calc = EMT()
        a.info["REF_energy"] = a.get_potential_energy()
        a.arrays["REF_forces"] = a.get_forces()
        a.calc = None
        frames.append(a)
    return frames


def test_mace_replay_fine_tuning_keeps_the_foundation_head_and_e0s(tmp_path):
    """With replay_file, mace's multi-head fine-tuning: the model gains the foundation's head ("pt_head")
    beside "Default", the one every calculator of this project evaluates; its E0s are the foundation's."""
    from reactforge.schemas.tasks import MACEModelSpec
    from reactforge.tasks.mlff import load_mlff
    from reactforge.tasks.training.mace import model_e0s

    data = _emt_cuau(8, seed=1)
    small = dict(committee_size=1, hidden_irreps="8x0e", max_L=0, max_ell=1, correlation=2, r_max_A=4.0,
                 num_interactions=1, batch_size=4, stage_two_start_epoch=None)
    found = run(TrainSpec(model=MACEModelSpec(max_num_epochs=3, **small)), data, TaskContext(workdir=tmp_path / "f"))
    replay = tmp_path / "replay.xyz"
    from ase.io import write

    write(replay, data, format="extxyz")
    foundation = found.model.paths[0]
    spec = TrainSpec(model=MACEModelSpec(max_num_epochs=2, foundation_model=foundation, replay_file=str(replay), **small))
    result = run(spec, _emt_cuau(5, seed=2), TaskContext(workdir=tmp_path / "t"))
    cmd = shlex.split(result.commands[0])
    assert "--multiheads_finetuning=True" in cmd and f"--pt_train_file={replay.resolve()}" in cmd
    import torch

    tuned = torch.load(result.model.paths[0], map_location="cpu", weights_only=False)
    assert list(tuned.heads) == ["pt_head", "Default"]
    foundation_e0 = model_e0s(Path(foundation))
    assert result.e0_eV == {"Cu": foundation_e0[29], "Au": foundation_e0[79]}
    atoms = _emt_cuau(1, seed=3)[0]
    atoms.calc = load_mlff(result.model)
    assert np.isfinite(atoms.get_potential_energy())
