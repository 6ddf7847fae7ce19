"""The nmr workflow's own MLFF (`train:`): thesis §3.2's MD loop on the start structure, through the real
engine, with EMT labels of a Cu cluster and the tiny GAP's settings."""
from __future__ import annotations

from pathlib import Path

import pytest
from ase.cluster import Icosahedron
from ase.io import write
from pydantic import ValidationError

from conftest import Quiet, tiny_gap_spec
from reactforge.engine.engine import Engine
from reactforge.engine.store import Store
from reactforge.schemas.loading import read_yaml, validate
from reactforge.schemas.nmr import NMRProtocol
from reactforge.schemas.site import SiteConfig
from reactforge.workflows import nmr

ROOT = Path(__file__).resolve().parents[1]


def _protocol(structure: Path, **changes) -> NMRProtocol:
    data = {"workflow": "nmr", "name": "nmr-train", "structure": str(structure),
            "train": {"reference": {"code": "emt"}, "model": tiny_gap_spec().model.model_dump(mode="json"),
                      "n_rattled": 3, "temperatures_K": [300.0, 600.0], "md_steps": 40, "timestep_fs": 1.0,
                      "sigma_thr_eV": 0.02, "max_iterations": 2},
            "shielding": {"code": "nwchem"}, "spectrum": {"isotope": "63Cu", "element": "Cu", "sigma_ref_ppm": 0.0}}
    data.update(changes)
    return NMRProtocol.model_validate(data)


def test_model_or_train_exactly_one(tmp_path):
    structure = tmp_path / "cu13.xyz"
    with pytest.raises(ValidationError, match="not both"):
        _protocol(structure, model={"model": "gap", "paths": ["gap.xml"]})
    with pytest.raises(ValidationError, match="'model' or 'train'"):
        _protocol(structure, train=None)


def test_the_mlff_is_trained_on_the_structure_by_md_rounds(tmp_path):
    structure = tmp_path / "cu13.xyz"
    write(structure, Icosahedron("Cu", 2))  # 13 atoms, no cell: centred in a box
    p = _protocol(structure)
    assert any("trained on" in line and "300, 600 K" in line for line in nmr.plan(p))
    run_dir = tmp_path / "run"
    store = Store(run_dir)
    site = validate("local", read_yaml(ROOT / "site-configs" / "local.yaml"), SiteConfig)
    with Engine(site, run_dir) as engine:
        wf = nmr.NMRWorkflow(p, engine, store, Quiet())
        out = wf.train_model()
    assert wf.model is not None and out["model"]["sha256"] == wf.model.sha256
    blocks = out["blocks"]
    assert list(blocks) == ["nmr-initial", "nmr-md-300K", "nmr-md-600K"]
    assert blocks["nmr-initial"]["labels_added"] == 1 + 1 + 3  # the Cu atom (E0), the structure, 3 rattled
    labels = store.training_set()
    assert len(labels) == out["labels"] == sum(b["labels_added"] for b in blocks.values())
    for name in ("nmr-md-300K", "nmr-md-600K"):  # each temperature ran its MD rounds on the current model
        b = blocks[name]
        assert 1 <= b["iterations"] <= 2 and len(b["history"]) == b["iterations"]
        assert b["termination_met"] == (b["history"][-1]["breached"] == 0)
    assert all(a.cell.rank == 3 and not a.pbc.any() for a in labels)  # the cluster in its box
