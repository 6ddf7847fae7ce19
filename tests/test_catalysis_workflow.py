"""The catalysis protocol end to end through run.py.

CI runs the embedded example (GFN2-xTB) with every block shortened; the full `examples/quickstart.yaml`
is the slow test (and `make demo`)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _run(protocol: Path, run_dir: Path, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "--site", "local", "--run-dir", str(run_dir),
                           "--no-live", str(protocol)], capture_output=True, text=True, timeout=timeout)


def _check_run(run_dir: Path, protocol: dict):
    summary = json.loads((run_dir / "summary.json").read_text())
    blocks = summary["blocks"]
    assert set(blocks) == {"initial", "bulk-md", "surface-md", "adsorbate-seed-md", "adsorbate-md",
                           "geometry-optimisation", "neb"}
    for name, b in blocks.items():
        assert {"iterations", "labels_added", "reference_calls", "termination_met", "criterion_value"} <= set(b)
    assert blocks["initial"]["labels_added"] >= 2 + 1 + protocol["parameters"]["b0_initial"]["n_rattled"]

    barriers = {b["reaction"]: b for b in summary["barriers"]}
    assert set(barriers) == {r["name"] for r in protocol["reactions"]}
    for b in barriers.values():  # the two H of H2: two orderings each
        assert b["permutations_screened"] == 2
    for b in barriers.values():
        assert b["mlff_barrier_eV"] >= 0
        if b["reference_barrier_eV"] is not None:
            # a validation NEB that stopped at its budget is flagged, and no error is read against it
            error, other = "abs_error_eV", "abs_error_vs_unconverged_eV"
            if b["validation_converged"] is False:
                error, other = other, error
            assert b[error] == pytest.approx(abs(b["mlff_barrier_eV"] - b["reference_barrier_eV"]))
            assert b[other] is None
    if protocol["validation"]["enabled"]:
        for name in barriers:
            v = summary["validation"][name]
            if "error" in v:  # GFN2-xTB's SCF cannot be converged at some point of a rough short-run band:
                assert "(scf)" in v["error"]  # reported as such, the run goes on
                continue
            assert "reference_fmax_step0_eV_per_A" in v and "steps" in v
            assert (barriers[name]["validation_steps"], barriers[name]["validation_converged"],
                    barriers[name]["validation_step0_fmax_eV_per_A"]) == (
                        v["steps"], v["converged"], v["reference_fmax_step0_eV_per_A"])
            assert v["reference_calls"] >= 2 + protocol["parameters"]["b6_neb"]["n_images"]
            # the reference barrier is measured between reference-relaxed ends; an end whose relaxation
            # failed (GFN2-xTB's SCF, as above) is reported as such and the NEB starts from the MLFF's end
            assert len(v["endpoint_relaxation"]) + len(v["endpoint_errors"]) == 2
            assert v["endpoints_relaxed"] == (not v["endpoint_errors"])
            assert all("(scf)" in e for e in v["endpoint_errors"])
            assert v["reference_calls"] >= 2 + protocol["parameters"]["b6_neb"]["n_images"] + sum(
                e["steps"] for e in v["endpoint_relaxation"])

    # adsorption energies (H only: μ_H from H2) in every block-5 and block-6 iteration, and the mechanism
    ads = summary["adsorption"]
    assert list(ads["chemical_potentials_eV"]) == ["H"] and list(ads["gas_references"]) == ["H2"]
    for block in ("geometry-optimisation", "neb"):
        assert [it["iteration"] for it in ads["iterations"] if it["block"] == block] == list(
            range(1, blocks[block]["iterations"] + 1))
    for it in ads["iterations"]:
        assert set(it["intermediates"]) == set(protocol["intermediates"])
        errors = [r["error_eV"] for r in it["intermediates"].values() if r["error_eV"] is not None]
        for r in it["intermediates"].values():
            if r["error_eV"] is not None:
                assert r["error_eV"] == pytest.approx(r["mlff_eV"] - r["reference_eV"])
        assert it["mae_eV"] == (pytest.approx(sum(map(abs, errors)) / len(errors)) if errors else None)
    assert ads["final"] == ads["iterations"][-1]["intermediates"]
    ts = [p for p in ads["profile"] if p["kind"] == "ts"]
    assert [p["reaction"] for p in ts] == [r["name"] for r in protocol["reactions"]]
    initials = {r["name"]: r["initial"] for r in protocol["reactions"]}
    for p in ts:  # a transition state sits at its initial state's E_ads plus the barrier
        initial = ads["final"][initials[p["reaction"]]]
        if initial["mlff_eV"] is not None:
            assert p["mlff_eV"] == pytest.approx(initial["mlff_eV"] + barriers[p["reaction"]]["mlff_barrier_eV"])
    assert (run_dir / "report" / "energy_profile_mechanism.png").exists()

    # the final MLFF band of each reaction, with both energies per image, for the user to inspect
    from ase.io import read

    for name, b in barriers.items():
        band = read(run_dir / "paths" / f"{name}.xyz", ":")
        assert len(band) == protocol["parameters"]["b6_neb"]["n_images"] + 2
        e = [a.info["energy_mlff_eV"] for a in band]
        assert max(e) - e[0] == pytest.approx(b["mlff_barrier_eV"], abs=1e-6)
        # as calculator results too, so `ase nebplot` and `ase gui` read the band as it is
        assert [a.get_potential_energy() for a in band] == pytest.approx(e)
        assert all(a.get_forces().shape == (len(a), 3) for a in band)
        if protocol["validation"]["enabled"] and "error" not in summary["validation"][name]:
            assert len(read(run_dir / "paths" / f"{name}.validation.xyz", ":")) == len(band)

    # every label carries its provenance, and the reasons of the protocol appear
    from ase.db import connect

    rows = list(connect(run_dir / "labels.db").select())
    assert len(rows) == summary["training_set_size"]
    reasons = {r.reason for r in rows}
    assert {"isolated atom", "bulk", "rattled + deformed bulk", "dimer", "placement",
            "approximate intermediate", "interpolated image", "NEB image", "slab"} <= reasons
    assert all(r.block and r.iteration >= 0 and r.task for r in rows)
    assert {r.energy_weight for r in rows if r.reason == "dimer"} == {0.2}
    # block 6 labels the interior images of each reaction's lowest path (thesis Table A.1), not its ends
    P6 = protocol["parameters"]["b6_neb"]
    if not P6.get("label_endpoints", False):
        neb_labels = [r for r in rows if r.reason == "NEB image"]
        assert 0 < len(neb_labels) <= P6["n_images"] * len(protocol["reactions"]) * blocks["neb"]["iterations"]

    report = run_dir / "report"
    assert (report / "index.html").exists()
    assert len(list(report.glob("*.png"))) >= 4
    assert (run_dir / "dataset.xyz").exists()


def _short_protocol(tmp_path: Path) -> tuple[Path, dict]:
    data = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    P = data["parameters"]
    P["b0_initial"]["n_rattled"] = 3
    for key in ("b1_bulk", "b2_surface", "b3_adsorbate_seed", "b4_adsorbate_md"):
        P[key].update(md_steps=30, max_iterations=1)
    P["b3_adsorbate_seed"].update(site_md_steps=10, site_md_snapshots=1, dimers_per_pair=2,
                                  placements_per_snapshot=2, fps_per_intermediate=1)
    P["b5_geometry"].update(max_iterations=1, max_steps=60)
    # two block-6 iterations (a criterion no rough model meets), the second from the first's bands
    # (short bands: what is checked is which NEBs run and what is counted, not where the rough model's bands end)
    P["b6_neb"].update(n_images=3, max_iterations=2, max_steps=20, screen_steps=8, energy_criterion_eV=1e-4,
                       warm_start=True)
    data["validation"] = {"enabled": True, "fmax_eV_per_A": 0.1, "max_steps": 2, "endpoint_max_steps": 5}
    # the short run's rough bands reach geometries where no damping converges GFN2-xTB's SCF; a smeared
    # fallback (T_el = 0.1 eV / k_B, those calculations only) keeps its reference NEBs running
    data["reference"]["fallback"]["smearing_width_eV"] = 0.1
    path = tmp_path / "quick-short.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, data


def test_catalysis_protocol_end_to_end_and_resume(tmp_path):
    protocol, data = _short_protocol(tmp_path)
    run_dir = tmp_path / "run"
    p = _run(protocol, run_dir, timeout=1500)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    _check_run(run_dir, data)
    first = json.loads((run_dir / "summary.json").read_text())
    assert first["status"] == "completed"
    assert first["blocks"]["neb"]["iterations"] == 2
    for h in first["blocks"]["neb"]["history"]:  # both block-6 measures, every iteration
        assert h["max_abs_energy_error_eV"] >= 0 and h["max_reference_perpendicular_fmax_eV_per_A"] >= 0
    # every permutation's band is screened (non-climbing, few steps); iteration 1 interpolates it between
    # the ends, iteration 2 starts from the previous band (warm_start), which the task sees as a whole
    # starting band (its step-0 force is then recorded). The full climbing NEB runs from a screened band,
    # for the lowest of each reaction and those within the margin only
    import sqlite3

    with sqlite3.connect(run_dir / "journal.db") as db:
        nebs = [(json.loads(s), json.loads(r)) for s, r in db.execute(
            "select spec, result from tasks where kind='neb' and status='done' order by submitted_at")
            if json.loads(s)["model"] is not None]
    screens = [r for s, r in nebs if not s["climb"]]
    full = [r for s, r in nebs if s["climb"]]
    n = len(data["reactions"])
    assert len(screens) == 2 * 2 * n  # 2 iterations x 2 permutations
    assert [r["fmax_initial_eV_per_A"] is None for r in screens] == [True] * 2 * n + [False] * 2 * n
    assert 2 * n <= len(full) <= 2 * 2 * n and all(r["fmax_initial_eV_per_A"] is not None for r in full)
    for h in first["blocks"]["neb"]["history"]:
        for row in h["barriers"].values():
            assert str(row["best_permutation"]) in map(str, row["full_neb_permutations"])
            assert len(row["screened_band_max_eV"]) == 2
    # every reference single point of the run is in some block's count (the dimer spacing search's
    # probes in block 3's, the gas references' in block 0's), and so is every step of block 0's
    # gas-reference relaxations (reference optimisations of unconstrained molecules; the validation's
    # endpoint relaxations hold the slab's bottom fixed and are the validation's); the run's total also
    # counts retries of a failed SCF
    with sqlite3.connect(run_dir / "journal.db") as db:
        (singlepoints,), = db.execute("select count(*) from tasks where kind='singlepoint'")
        gas_steps = sum(len(json.loads(r)["energies_eV"]) for s, r in db.execute(
            "select spec, result from tasks where kind='optimise' and status='done'")
            if json.loads(s)["reference"] is not None and not json.loads(s)["fixed_atoms"])
    assert gas_steps > 0
    assert sum(b["reference_calls"] for b in first["blocks"].values()) == singlepoints + gas_steps

    # the same command again: every task from the journal, the same answer
    p = _run(protocol, run_dir, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    again = json.loads((run_dir / "summary.json").read_text())
    assert again["reference_calls"] == 0
    assert again["barriers"] == first["barriers"]
    assert again["adsorption"] == first["adsorption"]
    assert again["training_set_size"] == first["training_set_size"]


@pytest.mark.slow
def test_quickstart_with_xtb(tmp_path):
    """`make demo`: the embedded protocol with GFN2-xTB, all blocks, validation on."""
    data = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    p = _run(ROOT / "examples" / "quickstart.yaml", tmp_path / "run", timeout=3600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    _check_run(tmp_path / "run", data)
