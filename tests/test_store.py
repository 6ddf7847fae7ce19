"""The run store: labels with provenance, training-set export, protocol identity, atomic JSON."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.io import read

from reactforge.schemas.results import SinglePointResult
from reactforge.engine.store import ProtocolMismatch, Store


def _result(atoms, energy=-1.5, stress=True):
    forces = np.arange(3 * len(atoms), dtype=float).reshape(-1, 3) * 0.01
    return SinglePointResult(atoms=atoms, energy_eV=energy, forces_eV_per_A=forces.tolist(),
                             stress_eV_per_A3=[0.1, 0.2, 0.3, 0.0, 0.0, 0.0] if stress else None,
                             reference="emt")


def test_label_roundtrip_with_provenance_and_weights(tmp_path):
    store = Store(tmp_path)
    cu = bulk("Cu", cubic=True)
    row = store.add_label(_result(cu), block="bulk", iteration=2, reason="threshold breach", task="abc",
                          energy_weight=0.2, force_weight=0.2, config_type="dimer")
    assert row is not None
    (a,) = store.training_set()
    assert a.info["REF_energy"] == -1.5 and a.info["block"] == "bulk" and a.info["iteration"] == 2
    assert a.info["reason"] == "threshold breach" and a.info["energy_weight"] == 0.2
    assert a.info["config_type"] == "dimer"
    np.testing.assert_allclose(a.arrays["REF_forces"], np.arange(12).reshape(4, 3) * 0.01)
    np.testing.assert_allclose(a.info["REF_stress"], [0.1, 0.2, 0.3, 0, 0, 0])
    np.testing.assert_allclose(a.positions, cu.positions)


def test_same_task_is_labelled_once(tmp_path):
    store = Store(tmp_path)
    h2o = molecule("H2O")
    assert store.add_label(_result(h2o, stress=False), block="b", iteration=0, reason="r", task="t1") is not None
    assert store.add_label(_result(h2o, stress=False), block="b", iteration=0, reason="r", task="t1") is None
    assert store.count() == 1


def test_dataset_export_has_ref_keys(tmp_path):
    store = Store(tmp_path)
    store.add_label(_result(molecule("H2O"), energy=-7.0, stress=False), block="b", iteration=0, reason="r", task="x")
    path = store.export_dataset()
    (a,) = read(path, index=":")
    assert a.info["REF_energy"] == -7.0
    assert a.arrays["REF_forces"].shape == (3, 3)
    assert not list(tmp_path.glob(".*tmp*"))


def test_protocol_claim_resume_refuse_archive(tmp_path):
    run = tmp_path / "r"
    assert Store.claim(run, "a: 1\n", force_new=False) == "new"
    (run / "journal.db").write_text("state")
    assert Store.claim(run, "a: 1\n", force_new=False) == "resume"
    with pytest.raises(ProtocolMismatch):
        Store.claim(run, "a: 2\n", force_new=False)
    assert (run / "journal.db").read_text() == "state"
    state = Store.claim(run, "a: 2\n", force_new=True)
    assert state.startswith("archived:")
    assert (tmp_path / "r.previous-1" / "journal.db").read_text() == "state"
    assert (run / "protocol.yaml").read_text() == "a: 2\n"


def test_a_comment_or_layout_edit_resumes_a_changed_value_does_not(tmp_path):
    import hashlib

    run = tmp_path / "r"
    assert Store.claim(run, "a: 1\nb: [x, y]\n", force_new=False) == "new"
    edited = "# what this run is for\nb:\n  - x\n  - y\na: 1   # one\n"
    assert Store.claim(run, edited, force_new=False) == "resume"
    assert (run / "protocol.yaml").read_text() == edited  # the run keeps the text it was resumed with
    with pytest.raises(ProtocolMismatch):
        Store.claim(run, "a: 1\nb: [y, x]\n", force_new=False)
    # a run stamped with its text's digest (before protocol identity was the data's) still resumes
    old = tmp_path / "old"
    old.mkdir()
    (old / "protocol.yaml").write_text("a: 1\n")
    (old / "protocol.sha256").write_text(hashlib.sha256(b"a: 1\n").hexdigest() + "\n")
    assert Store.claim(old, "a: 1\n", force_new=False) == "resume"


def test_summary_updates_merge(tmp_path):
    store = Store(tmp_path)
    store.update_summary(blocks={"bulk": 1})
    store.update_summary(barriers=[1.0])
    again = Store(tmp_path)
    assert again.read_json("summary.json") == {"blocks": {"bulk": 1}, "barriers": [1.0]}


def test_a_run_copy_of_the_protocol_resolves_its_files_against_the_original_folder(tmp_path):
    from reactforge.schemas.loading import ProtocolFile, load_protocol

    class P(ProtocolFile):
        a: int

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "structures").mkdir()
    (inputs / "protocol.yaml").write_text("a: 1\n")
    run = tmp_path / "runs" / "r"
    assert Store.claim(run, "a: 1\n", force_new=False, source_dir=inputs) == "new"
    copy = load_protocol(run / "protocol.yaml", P)
    # the copy's relative names (intermediates.X.file, bulk.file) are the original's
    assert copy.resolve("structures/x.xyz") == inputs / "structures" / "x.xyz"
    assert load_protocol(inputs / "protocol.yaml", P).resolve("y") == inputs / "y"
    # a resume from a protocol moved elsewhere records its new folder
    moved = tmp_path / "moved"
    moved.mkdir()
    assert Store.claim(run, "a: 1\n", force_new=False, source_dir=moved) == "resume"
    assert load_protocol(run / "protocol.yaml", P).resolve("y") == moved / "y"
