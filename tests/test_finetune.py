"""The fine-tuning workflow (thesis chapter 4, Fig. 4.3a): selection prefers frames the committee disagrees on
and keeps them diverse; one loop iteration through the real engine makes the held-out force RMSE drop below
the foundation's. The "foundation" is a small MACE trained here on EMT Cu bulk and (111) slabs; the target
is a Cu adatom on Cu(111) at higher temperatures, which it has never seen, labelled with EMT."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import add_adsorbate, fcc111
from ase.constraints import FixAtoms
from ase.io import read, write
from conftest import Quiet, make_emt_cu_training_set
from reactforge.engine.engine import Engine
from reactforge.engine.store import Store
from reactforge.schemas.finetune import FinetuneProtocol
from reactforge.schemas.loading import read_yaml, validate
from reactforge.schemas.site import SiteConfig
from reactforge.schemas.tasks import MACEModelSpec, TrainSpec
from reactforge.tasks.context import TaskContext
from reactforge.workflows import finetune

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- selection


def test_selection_takes_the_uncertain_frames_and_not_near_duplicates_of_one():
    """60 frames: 10 uncertain ones, of which 6 are near-copies of one configuration. K = 4 from the top 10
    must all be uncertain (random picks would be: (10/60)^4 < 1e-3) and at most one of the near-copies."""
    rng = np.random.default_rng(0)
    n, d = 60, 8
    vectors = rng.normal(size=(n, d))
    uncertain = np.arange(10, 20)
    copies = uncertain[:6]
    vectors[copies] = vectors[copies[0]] + 1e-3 * rng.normal(size=(6, d))
    # the near-copies are the most uncertain of all: top-K alone would pick four of them
    uncertainty = rng.uniform(0.01, 0.05, n)
    uncertainty[uncertain] = rng.uniform(0.3, 0.4, 10)
    uncertainty[copies] = rng.uniform(0.5, 0.6, 6)
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    chosen = finetune.select(uncertainty, distances, k=4, candidates=10)
    assert len(chosen) == 4 and set(chosen) <= set(uncertain)
    assert len(set(chosen) & set(copies)) == 1
    assert chosen[0] == int(np.argmax(uncertainty))  # FPS starts from the most uncertain
    # labelled frames are not chosen again
    again = finetune.select(uncertainty, distances, k=4, candidates=6, exclude=set(chosen))
    assert not set(again) & set(chosen) and set(again) <= set(uncertain)


# ---------------------------------------------------------------------------------------------- the loop


@pytest.fixture(scope="module")
def foundation(tmp_path_factory) -> Path:
    """A single MACE (8x0e, one interaction, 30 epochs) trained on EMT Cu bulk and slabs: the foundation."""
    from reactforge.tasks.train import run

    spec = TrainSpec(model=MACEModelSpec(committee_size=1, hidden_irreps="8x0e", max_L=0, max_ell=1, correlation=2,
                                         r_max_A=4.0, num_interactions=1, max_num_epochs=30, batch_size=4,
                                         stage_two_start_epoch=None))
    result = run(spec, make_emt_cu_training_set(), TaskContext(workdir=tmp_path_factory.mktemp("foundation")))
    return Path(result.model.paths[0])


def adatom_file(path: Path) -> Path:
    slab = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=8.0)
    add_adsorbate(slab, "Cu", 2.0, "fcc")
    slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag == 3]))
    write(path, slab, format="extxyz")
    return path


def test_one_iteration_lowers_the_held_out_force_rmse(tmp_path, foundation):
    p = FinetuneProtocol.model_validate({
        "workflow": "finetune", "name": "ft", "foundation_model": str(foundation),
        "structures": [str(adatom_file(tmp_path / "adatom.xyz"))], "reference": {"code": "emt"},
        "sampling": {"temperatures_K": [600.0, 1200.0], "steps": 160, "snapshots": 8},
        "selection": {"labels_per_iteration": 4, "candidates": 6, "initial_labels": 3, "committee_size": 2},
        "training": {"max_num_epochs": 20, "batch_size": 2, "patience": 20},
        "held_out": {"snapshots": 4}, "iterations": 1})
    lines = finetune.plan(p)
    assert any("2 trajectories" in line and "no σ interrupt" in line for line in lines)
    run_dir = tmp_path / "ft"
    store = Store(run_dir)
    site = validate("local", read_yaml(ROOT / "site-configs" / "local.yaml"), SiteConfig)
    with Engine(site, run_dir) as engine:
        out = finetune.run(p, engine, store, Quiet())
    (row,) = out["finetune"]["iterations"]
    assert row["labels"] == row["labels_added"] == 3 + 4
    found, tuned = row["foundation"]["force_rmse_eV_per_A"], row["finetuned"]["force_rmse_eV_per_A"]
    assert tuned < found and row["ratio"] == pytest.approx(found / tuned)
    assert row["finetuned"]["energy_rmse_meV_per_atom"] >= 0 and row["foundation"]["energy_rmse_meV_per_atom"] >= 0
    # the labelled frames are the uncertain ones: above the median of the frames chosen from (top 6 of 13)
    assert min(row["selected_uncertainty_eV_per_A"]) >= row["median_uncertainty_eV_per_A"]
    # held-out frames are labelled but never trained on: not in labels.db, not in dataset.xyz
    held = read(run_dir / "finetune" / "held_out-1.xyz", ":")
    assert len(held) == row["held_out_frames"] == 2 * 4
    training = store.training_set()
    assert len(training) == 7 and {a.info["block"] for a in training} == {"finetune"}
    trained = {a.positions.tobytes() for a in read(run_dir / "dataset.xyz", ":")}
    assert not any(a.positions.tobytes() in trained for a in held)
    assert len(out["model"]["paths"]) == 2 and out["model"]["sha256"] == row["model"]
    assert (run_dir / "report" / "finetune_parity.png").stat().st_size > 0
    json.dumps(out)  # summary.json takes it as it is
