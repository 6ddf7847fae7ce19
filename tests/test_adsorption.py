"""Adsorption energies (thesis §3.4, Supp. Figs. 1-2): chemical potentials from gas references, each
iteration's MLFF and reference E_ads with their mean absolute error, the mechanism on one energy axis,
and a real run (EMT) that writes them to summary.json and the report."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ase.db import connect

from reactforge.workflows import adsorption, report

ROOT = Path(__file__).resolve().parents[1]


def test_chemical_potentials_from_h2_h2o_co2():
    mu = adsorption.chemical_potentials({"CO2": -23.0, "H2O": -14.2, "H2": -6.8})
    assert mu == pytest.approx({"H": -3.4, "O": -14.2 + 6.8, "C": -23.0 - 2 * (-14.2 + 6.8)})


@pytest.mark.parametrize("names, missing", [(["H2O"], "H, O"), (["H2", "CO2"], "C, H, O"),
                                            (["H2", "O2", "H2O"], "H, O")])
def test_a_set_that_does_not_fix_every_mu_is_refused_naming_the_field(names, missing):
    with pytest.raises(ValueError, match=f"field 'gas_references'.*{missing} exactly"):
        adsorption.check_references(names, ["H", "O"])


def test_an_adsorbate_element_no_molecule_contains_is_named():
    with pytest.raises(ValueError, match="no molecule contains C .*CO2"):
        adsorption.check_references(["H2", "H2O"], ["C", "H", "O"])
    with pytest.raises(ValueError, match="neither an element nor"):
        adsorption.check_references(["H2", "unobtainium"], ["H"])


def test_defaults_close_over_the_elements_of_their_molecules():
    assert adsorption.default_references(["H"]) == ["H2"]
    assert adsorption.default_references(["C", "O"]) == ["H2", "H2O", "CO2"]  # CO2 needs μ_O, H2O needs μ_H
    assert adsorption.default_references(["Cu"]) == ["Cu"]  # a metal adatom: its free atom
    for elements in (["H"], ["C", "H", "O"], ["N", "O"], ["Cu", "H"]):
        adsorption.check_references(adsorption.default_references(elements), elements)


def test_gas_atoms_sit_in_a_non_periodic_box():
    h2o = adsorption.gas_atoms("H2O", 10.0)
    assert h2o.get_chemical_formula() == "H2O" and not h2o.pbc.any()
    pos = h2o.positions
    assert (pos.min(axis=0) + pos.max(axis=0)) / 2 == pytest.approx([5.0, 5.0, 5.0])
    assert adsorption.gas_atoms("Cu", 12.0).positions.tolist() == [[6.0, 6.0, 6.0]]


def test_adsorption_rows_and_mae():
    mu = {"H": -3.0, "O": -7.0}
    adsorbates = {"OH": {"O": 1, "H": 1}, "H": {"H": 1}, "lost": {"H": 1}}
    reference = {"OH": -110.5, "H": -103.5, "lost": -103.0}
    mlff = {"OH": -110.7, "H": -103.2, "lost": None}  # lost: its optimisation breached
    rows = adsorption.adsorption_rows(adsorbates, mlff, reference, (-100.1, -100.0), mu)
    assert rows["OH"]["reference_eV"] == pytest.approx(-110.5 + 100.0 + 10.0)
    assert rows["OH"]["mlff_eV"] == pytest.approx(-110.7 + 100.1 + 10.0)
    assert rows["OH"]["error_eV"] == pytest.approx(-0.1)  # one μ for both: the error is the slab + OH part's
    assert rows["H"]["error_eV"] == pytest.approx(0.4)
    assert rows["lost"]["mlff_eV"] is None and rows["lost"]["error_eV"] is None
    assert rows["lost"]["reference_eV"] == pytest.approx(0.0)
    assert adsorption.mean_absolute_error(rows) == pytest.approx(0.25)
    assert adsorption.mean_absolute_error({"x": rows["lost"]}) is None
    # no MLFF site slab (its optimisation failed): no MLFF E_ads, the reference's stand
    rows = adsorption.adsorption_rows(adsorbates, mlff, reference, (None, -100.0), mu)
    assert rows["OH"]["mlff_eV"] is None and rows["OH"]["reference_eV"] is not None


def test_the_mechanism_chains_reactions_through_shared_states():
    rows = {"A": {"mlff_eV": -0.5, "reference_eV": -0.4}, "B": {"mlff_eV": -1.0, "reference_eV": -1.1},
            "C": {"mlff_eV": -2.0, "reference_eV": -2.1}, "D": {"mlff_eV": 0.1, "reference_eV": None}}
    points = adsorption.mechanism_profile([("r1", "A", "B"), ("r2", "B", "C"), ("r3", "D", "A")], rows,
                                          {"r1": (0.3, 0.35), "r2": (0.8, None), "r3": (0.2, 0.2)})
    assert [p["label"] for p in points] == ["A", "TS r1", "B", "TS r2", "C", "D", "TS r3", "A"]
    assert [p["kind"] for p in points] == ["intermediate", "ts", "intermediate", "ts", "intermediate",
                                           "intermediate", "ts", "intermediate"]
    assert points[1]["mlff_eV"] == pytest.approx(-0.2) and points[1]["reference_eV"] == pytest.approx(-0.05)
    assert points[3]["mlff_eV"] == pytest.approx(-0.2) and points[3]["reference_eV"] is None
    assert points[6]["mlff_eV"] == pytest.approx(0.3) and points[6]["reference_eV"] is None


def test_the_report_draws_the_mechanism_and_the_error_per_iteration(tmp_path):
    rows = {"A": {"mlff_eV": -0.5, "reference_eV": -0.42, "error_eV": -0.08},
            "B": {"mlff_eV": -1.0, "reference_eV": -1.01, "error_eV": 0.01}}
    ads = {"gas_references": {"H2": {"reference_eV": -6.8}}, "chemical_potentials_eV": {"H": -3.4},
           "iterations": [{"block": "geometry-optimisation", "iteration": 1, "intermediates": rows, "mae_eV": 0.045},
                          {"block": "neb", "iteration": 1, "intermediates": rows, "mae_eV": 0.045}],
           "final": rows, "profile": adsorption.mechanism_profile([("r", "A", "B")], rows, {"r": (0.3, 0.31)})}
    page = report.write_report(tmp_path, {"name": "x", "adsorption": ads}).read_text()
    assert (tmp_path / "energy_profile_mechanism.png").stat().st_size > 0
    assert (tmp_path / "adsorption_error.png").stat().st_size > 0
    assert "Adsorption energies" in page and "<td>A</td><td>-0.5</td><td>-0.42</td><td>-0.08</td>" in page
    assert "<td>5.1</td><td>geometry-optimisation</td><td>0.045</td>" in page and "μ_H = -3.4000 eV" in page
    # a run without adsorption energies (gas_references: []) writes neither
    report.write_report(tmp_path / "none", {"name": "y", "adsorption": None})
    assert not (tmp_path / "none" / "energy_profile_mechanism.png").exists()


def _h_on_cu(tmp_path: Path, **over) -> Path:
    """H hopping between two hollows of Cu(100), EMT (which has H parameters): H2 is the gas reference."""
    data = yaml.safe_load((ROOT / "examples" / "cu-adatom-hop.yaml").read_text())
    data["intermediates"] = {"H@hollow-a": {"fragments": [{"molecule": "H", "position_A": [0.0, -1.795, 1.0]}]},
                             "H@hollow-b": {"fragments": [{"molecule": "H", "position_A": [1.795, 0.0, 1.0]}]}}
    data["reactions"] = [{"name": "hop", "initial": "H@hollow-a", "final": "H@hollow-b"}]
    data.update(over)
    path = tmp_path / "h.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *map(str, args)], check=False, capture_output=True,
                          text=True, timeout=timeout)


def test_gas_references_that_do_not_fix_mu_are_exit_2_naming_file_and_field(tmp_path):
    path = _h_on_cu(tmp_path, gas_references=["H2O"])
    p = _cli("--check", "--no-preview", path)
    assert p.returncode == 2 and str(path) in p.stderr and "gas_references" in p.stderr and "H, O" in p.stderr
    p = _cli("--check", "--no-preview", _h_on_cu(tmp_path, gas_references=["H2", "Hydrogen"]))
    assert p.returncode == 2 and "gas_references" in p.stderr and "'Hydrogen'" in p.stderr
    p = _cli("--check", "--no-preview", _h_on_cu(tmp_path))
    assert p.returncode == 0 and "μ of H from H2" in p.stdout and "gas references H2 relaxed" in p.stdout


def test_a_run_reports_adsorption_energies_per_iteration(tmp_path):
    """Blocks 0 and 5 on EMT: H2 relaxed on the reference in block 0, the minima's labels of each block-5
    iteration give the reference E_ads (no further calls), the MLFF's from the optimisations (~30 s)."""
    # σ_thr high: no breach, so every block-5 minimum gives an adsorption energy; a criterion no short
    # optimisation meets: two iterations
    b5 = {"max_iterations": 2, "max_steps": 20, "fmax_criterion_eV_per_A": 0.001}
    data_over = {"blocks": [0, 5], "reactions": [], "validation": {"enabled": False}, "sigma_thr_eV": 5.0,
                 "parameters": {"b0_initial": {"n_rattled": 2}, "b5_geometry": b5}}
    run_dir = tmp_path / "run"
    p = _cli("--site", "local", "--run-dir", run_dir, "--no-live", _h_on_cu(tmp_path, **data_over), timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    ads = summary["adsorption"]

    rows: dict[tuple, list[float]] = {}  # (block, iteration, reason, atoms) -> label energies
    for r in connect(run_dir / "labels.db").select():
        rows.setdefault((r.block, r.iteration, r.reason, r.natoms), []).append(r.energy)
    assert ("initial", 0, "gas reference", 2) not in rows  # reference energies, not training data

    # block 0's reference calls: its labels, every step of the H2 relaxation and the single point after it
    with sqlite3.connect(run_dir / "journal.db") as db:
        relaxations = [json.loads(r) for s, r in db.execute("select spec, result from tasks where kind='optimise'")
                       if json.loads(s)["reference"] is not None]
        molecules = [json.loads(r)["energy_eV"] for (r,) in db.execute(
            "select result from tasks where kind='singlepoint'") if json.loads(r)["atoms"].startswith("2\n")]
    assert len(relaxations) == 1 and len(molecules) == 1
    (e_h2,) = molecules
    assert ads["gas_references"]["H2"]["reference_eV"] == pytest.approx(e_h2)
    assert ads["chemical_potentials_eV"] == pytest.approx({"H": e_h2 / 2})
    steps = len(relaxations[0]["energies_eV"])
    assert ads["gas_references"]["H2"]["relaxation"]["reference_calls"] == steps
    n_initial = sum(1 for r in connect(run_dir / "labels.db").select(block="initial"))
    assert summary["blocks"]["initial"]["reference_calls"] == n_initial + steps + 1

    iterations = ads["iterations"]
    assert len(iterations) == 2
    assert [(it["block"], it["iteration"]) for it in iterations] == [
        ("geometry-optimisation", k) for k in range(1, summary["blocks"]["geometry-optimisation"]["iterations"] + 1)]
    n_site = 32  # the Cu(100) slab: a site_index site removes nothing; each intermediate adds one H
    for it in iterations:
        k = it["iteration"]
        (site,) = rows[("geometry-optimisation", k, "final geometry", n_site)]
        assert it["site_slab"]["reference_eV"] == pytest.approx(site)  # the label of the relaxed bare site
        assert it["site_slab"]["mlff_eV"] is not None
        assert set(it["intermediates"]) == {"H@hollow-a", "H@hollow-b"}
        minima = rows[("geometry-optimisation", k, "final geometry", n_site + 1)]
        assert len(minima) == 2
        for row in it["intermediates"].values():  # each from one of the two minima's labels
            assert min(abs(row["reference_eV"] - (e - site - e_h2 / 2)) for e in minima) < 1e-9
            assert row["error_eV"] == pytest.approx(row["mlff_eV"] - row["reference_eV"])
        assert it["mae_eV"] == pytest.approx(sum(abs(r["error_eV"]) for r in it["intermediates"].values()) / 2)
        assert it["chemical_potentials_mlff_eV"]["H"] != pytest.approx(e_h2 / 2, abs=1e-9)  # the model's, beside
    assert ads["final"] == iterations[-1]["intermediates"] and ads["mae_eV"] == iterations[-1]["mae_eV"]
    assert ads["profile"] == []  # no reactions: no mechanism to draw
    assert (run_dir / "report" / "adsorption_error.png").exists()
    assert "Adsorption energies (last iteration)" in (run_dir / "report" / "index.html").read_text()
