"""Report figures and index.html from plain run data."""
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from reactforge.engine.engine import Engine
from reactforge.engine.store import Store
from reactforge.schemas.loading import read_yaml, validate
from reactforge.schemas.site import SiteConfig
from reactforge.workflows import report

ROOT = Path(__file__).resolve().parents[1]


def _local_site():
    return validate("local", read_yaml(ROOT / "site-configs" / "local.yaml"), SiteConfig)


def _png_ok(path):
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 0.01  # something was drawn


def test_write_report_all_figures_and_tables(tmp_path):
    rng = np.random.default_rng(0)
    sigma = np.full((50, 20), 0.005) + rng.uniform(0, 0.002, (50, 20))
    sigma[40:, 18] = 0.08  # one adsorbate atom of many breaches
    summary = {
        "name": "quickstart",
        "wall_s": 812.5,
        "blocks": [
            {"block": 0, "name": "initial", "iterations": 0, "labels_added": 14, "reference_calls": 14,
             "termination_met": True, "criterion_value": None},
            {"block": 6, "name": "neb", "iterations": 3, "labels_added": 30, "reference_calls": 30,
             "termination_met": False, "criterion_value": 0.071},
        ],
        "barriers": [{"reaction": "H2-dissociation<&>", "permutations_screened": 2, "mlff_barrier_eV": 0.51,
                      "reference_barrier_eV": 0.53, "abs_error_eV": 0.02}],
    }
    page = report.write_report(
        tmp_path / "report",
        summary,
        growth=[{"block": 0, "iteration": 0, "reason": "isolated atom", "count": 4},
                {"block": 0, "iteration": 0, "reason": "rattled bulk", "count": 10},
                {"block": 3, "iteration": 0, "reason": "dimer", "count": 24},
                {"block": 3, "iteration": 1, "reason": "threshold breach", "count": 5},
                {"block": 6, "iteration": 1, "reason": "threshold breach", "count": 7}],
        sigma_traces=[{"steps": list(range(0, 100, 2)), "sigma_eV": sigma.tolist(), "sigma_thr_eV": 0.05,
                       "symbols": ["Mg"] * 17 + ["C", "O", "O"], "highlight": [17, 18, 19]}],
        barrier_iterations={"H2-dissociation": [{"iteration": 1, "mlff_barrier_eV": 0.8, "reference_barrier_eV": 0.6},
                                                {"iteration": 2, "mlff_barrier_eV": 0.55, "reference_barrier_eV": None}]},
        profiles={"H2-dissociation": {"mlff_eV": [-10, -9.5, -9.9], "reference_eV": [-20, -19.45, -19.9]},
                  "CO2": {"mlff_eV": [0, 0.3, -0.2], "reference_eV": None}},
        parity_data={"reference_energy_eV_per_atom": [-3.0, -3.1, -2.9], "mlff_energy_eV_per_atom": [-3.01, -3.1, -2.91],
                     "reference_forces_eV_per_A": rng.normal(size=30).tolist(),
                     "mlff_forces_eV_per_A": rng.normal(size=30).tolist()},
    )
    names = ["training_growth.png", "sigma_trace_0.png", "barrier_history.png", "energy_profile.png", "parity.png"]
    for n in names:
        _png_ok(tmp_path / "report" / n)
    text = page.read_text()
    for n in names:
        assert f"src='{n}'" in text
    assert "H2-dissociation&lt;&amp;&gt;" in text  # escaped
    assert "0.071" in text and "812.5" in text
    assert not list((tmp_path / "report").glob(".*"))  # no temporary files left


def test_report_without_optional_data(tmp_path):
    page = report.write_report(tmp_path, {"name": "x", "blocks": {"1": {"iterations": 2, "termination_met": True}}})
    text = page.read_text()
    assert "<img" not in text and "yes" in text


def test_bad_figure_input_raises(tmp_path):
    with pytest.raises(ValueError, match="steps"):
        report.sigma_trace([0, 1, 2], [[0.1, 0.2]], tmp_path / "s.png")
    with pytest.raises(ValueError, match="equal length"):
        report.parity([1.0], [1.0, 2.0], [0.0], [0.0], tmp_path / "p.png")
    with pytest.raises(ValueError, match="differ in length"):
        report.energy_profile({"r": {"mlff_eV": [0, 1], "reference_eV": [0, 1, 2]}}, tmp_path / "e.png")
    with pytest.raises(ValueError, match="no rows"):
        report.training_growth([], tmp_path / "g.png")


def _labelled(training_set):
    labelled = []
    for k, a in enumerate(training_set):
        b = a.copy()
        b.info.update(block=["initial", "bulk-md", "surface-md"][min(k // 7, 2)], iteration=k % 3,
                      reason="threshold breach" if k % 2 else "rattled bulk")
        labelled.append(b)
    return labelled


def test_report_from_run_objects(tmp_path, emt_cu_training_set, tiny_gap_model):
    """The workflow hands over the labelled set, the NEB history and the evaluated parity data (evaluate
    tasks through the engine); the figures follow."""
    labelled = _labelled(emt_cu_training_set)
    sigma = np.full((10, 4), 0.01)
    sigma[7:, 2] = 0.07
    summary = {"name": "run", "blocks": {"bulk-md": {"name": "bulk-md", "iterations": 2, "termination_met": True,
                                                     "breach_trace": {"steps": list(range(10)), "sigma_eV": sigma.tolist(),
                                                                      "symbols": ["Cu"] * 4, "sigma_thr_eV": 0.05,
                                                                      "iteration": 1}}}}
    history = [{"iteration": 1, "r": {"mlff_barrier_eV": 0.9, "reference_barrier_eV": 0.7,
                                      "mlff_energies_eV": [0, 0.9, 0.1], "reference_energies_eV": [0, 0.7, 0.2]}},
               {"iteration": 2, "r": {"mlff_barrier_eV": 0.72, "reference_barrier_eV": 0.71,
                                      "mlff_energies_eV": [0, 0.72, 0.1], "reference_energies_eV": [0, 0.71, 0.1]}}]
    with Engine(_local_site(), tmp_path / "run") as engine:
        par = report.evaluate_training_set(engine, tiny_gap_model, labelled)
    page = report.write_report(tmp_path, summary, training_set=labelled, neb_history=history,
                               paths={"r": {"energies_eV": [0, 0.72, 0.1]}}, parity_data=par)
    for n in ["training_growth.png", "sigma_trace_0.png", "barrier_history.png", "energy_profile.png", "parity.png"]:
        _png_ok(tmp_path / n)
    rows = report.growth_rows(labelled)
    assert sum(r["count"] for r in rows) == len(labelled)
    assert {r["block"] for r in rows} == {0, 1, 2}
    assert report.breach_traces(summary)[0]["highlight"][0] == 2  # the breaching atom first
    assert report.barrier_rows(history)["r"][1]["mlff_barrier_eV"] == 0.72
    assert report.profile_rows(history, {})["r"]["reference_eV"] == [0, 0.71, 0.1]
    # block 6 labels the interior images only: the profile's reference is then the validation NEB
    interior = [{"iteration": 3, "r": {"mlff_barrier_eV": 0.7, "reference_barrier_eV": None,
                                       "mlff_energies_eV": [0, 0.7, 0.1], "reference_energies_eV": [None, 0.69, None]}}]
    validation = {"r": {"reference_energies_eV": [0, 0.68, 0.12]}}
    assert report.profile_rows(interior, {}, validation)["r"]["reference_eV"] == [0, 0.68, 0.12]
    assert report.profile_rows(interior, {})["r"]["reference_eV"] is None
    # the GAP was fitted to these labels: energies agree to a few meV/atom
    err = np.abs(np.subtract(par["reference_energy_eV_per_atom"], par["mlff_energy_eV_per_atom"]))
    assert err.max() < 0.02
    assert "parity.png" in page.read_text()


def test_evaluated_parity_is_the_models_own_numbers(tmp_path, emt_cu_training_set, tiny_gap_model):
    """evaluate_training_set leaves the isolated atom out and gives what the calculator gives."""
    from reactforge.tasks.mlff import load_mlff

    labelled = _labelled(emt_cu_training_set)
    with Engine(_local_site(), tmp_path / "run") as engine:
        par = report.evaluate_training_set(engine, tiny_gap_model, labelled, chunk=7)
    fitted = [a for a in labelled if a.info.get("config_type") != "isolated_atom"]
    assert len(fitted) == len(labelled) - 1 == len(par["mlff_energy_eV_per_atom"])
    calc = load_mlff(tiny_gap_model)
    e, f = [], []
    for a in fitted:
        b = a.copy()
        b.calc = calc
        e.append(b.get_potential_energy() / len(b))
        f.extend(b.get_forces().ravel())
    np.testing.assert_allclose(par["mlff_energy_eV_per_atom"], e, atol=1e-7)  # extxyz positions: 1e-8 Å
    np.testing.assert_allclose(par["mlff_forces_eV_per_A"], f, atol=1e-5)
    np.testing.assert_allclose(par["reference_energy_eV_per_atom"], [a.info["REF_energy"] / len(a) for a in fitted])


def test_report_into_the_store(tmp_path, emt_cu_training_set, tiny_gap_model):
    """A Store as the destination writes its report/ folder, parity from evaluate tasks, no temporary files left."""
    labelled = _labelled(emt_cu_training_set)
    store = Store(tmp_path / "run")
    with Engine(_local_site(), tmp_path / "run") as engine:
        parity_data = report.evaluate_training_set(engine, tiny_gap_model, labelled)
    page = report.write_report(store, {"name": "x"}, training_set=labelled, parity_data=parity_data)
    assert page == store.report_dir / "index.html"
    for n in ["training_growth.png", "parity.png"]:
        _png_ok(store.report_dir / n)
    assert not [p for p in store.report_dir.rglob("*") if ".tmp" in p.name]
