"""What a catalysis run reports about its reference barriers, and what its schema refuses to guess:
an unconverged validation NEB is flagged, never an error "met"; a metal slab needs no oxide."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from reactforge.workflows import report
from reactforge.workflows.catalysis import barrier_table

ROOT = Path(__file__).resolve().parents[1]


def _validation(converged: bool, barrier: float) -> dict:
    return {"reference_fmax_step0_eV_per_A": 0.54, "steps": 40 if not converged else 12, "converged": converged,
            "reference_barrier_eV": barrier}


def test_an_unconverged_validation_keeps_its_barrier_but_gives_no_error():
    block6 = {r: {"mlff_barrier_eV": 0.16, "reference_barrier_eV": None, "permutations_screened": 2}
              for r in ("a", "b", "c")}
    validation = {"a": _validation(True, 0.13), "b": _validation(False, 0.107), "c": {"error": "scf"}}
    rows = {r["reaction"]: r for r in barrier_table(["a", "b", "c"], block6, validation)}
    a, b, c = rows["a"], rows["b"], rows["c"]
    assert abs(a["abs_error_eV"] - 0.03) < 1e-12 and a["abs_error_vs_unconverged_eV"] is None
    assert (a["validation_converged"], a["validation_steps"], a["validation_step0_fmax_eV_per_A"]) == (True, 12, 0.54)
    assert b["reference_barrier_eV"] == 0.107 and b["abs_error_eV"] is None
    assert abs(b["abs_error_vs_unconverged_eV"] - 0.053) < 1e-12
    assert (b["validation_converged"], b["validation_steps"]) == (False, 40)
    assert c["validation_converged"] is None and c["abs_error_eV"] is None


def test_the_report_barrier_table_shows_convergence_steps_and_step0_force(tmp_path):
    row = barrier_table(["b"], {"b": {"mlff_barrier_eV": 0.16, "reference_barrier_eV": None,
                                      "permutations_screened": 2}}, {"b": _validation(False, 0.107)})
    page = report.write_report(tmp_path / "report", {"name": "x", "barriers": row}).read_text()
    for column in ("validation_converged", "validation_steps", "validation_step0_fmax_eV_per_A",
                   "abs_error_vs_unconverged_eV"):
        assert column in page
    assert "<td>no</td><td>40</td><td>0.54</td>" in page


def _metal_protocol(tmp_path: Path, **over) -> Path:
    data = yaml.safe_load((ROOT / "examples" / "cu-adatom-hop.yaml").read_text())
    data.update(over)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "--check", "--no-preview", str(path)], capture_output=True,
                          text=True, timeout=300)


def test_a_metal_slab_with_a_site_index_needs_no_oxygen(tmp_path):
    p = _check(_metal_protocol(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "nothing removed" in p.stdout and "(Cu)" in p.stdout and "top-layer atoms" in p.stdout


def test_no_active_site_is_exit_2_naming_file_and_field(tmp_path):
    path = _metal_protocol(tmp_path)
    data = yaml.safe_load(path.read_text())
    del data["active_site"]
    path.write_text(yaml.safe_dump(data))
    p = _check(path)
    assert p.returncode == 2 and str(path) in p.stderr and "active_site" in p.stderr
    assert "Traceback" not in p.stderr
    # a vacancy names its element: there is no oxide default either
    data["active_site"] = {"kind": "vacancy"}
    path.write_text(yaml.safe_dump(data))
    p = _check(path)
    assert p.returncode == 2 and "active_site.vacancy.element" in p.stderr
