"""Every shipped example passes `run.py --check` as shipped; the cheap one (precomputed NMR) also runs for
real; a precomputed magres file that is missing or unreadable stops --check with exit 2 naming the field."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
PRECOMPUTED = ROOT / "examples" / "nmr_precomputed.yaml"


def run_py(*args, timeout=600):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_passes_check(example, tmp_path):
    p = run_py("--check", "--no-preview", "--site", "local-htex", "--run-dir", tmp_path / "run", example)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "is valid" in p.stdout and not (tmp_path / "run").exists()


def test_precomputed_nmr_example_runs(tmp_path):
    run_dir = tmp_path / "run"
    p = run_py("run", "--site", "local", "--no-live", "--run-dir", run_dir, PRECOMPUTED)
    assert p.returncode == 0, p.stdout + p.stderr
    spectra = json.loads((run_dir / "nmr" / "spectra.json").read_text())
    assert {"A", "B", "C", "D"} <= set(spectra) and spectra["nuclei"] == ["O1", "O2", "O3"]
    assert (run_dir / "report" / "nmr_spectra.png").stat().st_size > 0
    summary = json.loads((run_dir / "nmr" / "summary.json").read_text())
    assert summary["n_minima"] == 2 and summary["populations"] == pytest.approx([0.5, 0.5])


def _copy_example(tmp_path: Path) -> Path:
    shutil.copy(PRECOMPUTED, tmp_path / PRECOMPUTED.name)
    shutil.copytree(ROOT / "examples" / "magres", tmp_path / "magres")
    return tmp_path / PRECOMPUTED.name


def test_check_names_a_missing_magres_file(tmp_path):
    protocol = _copy_example(tmp_path)
    (tmp_path / "magres" / "minimum1_md001.magres").unlink()
    p = run_py("--check", "--no-preview", "--site", "local-htex", protocol)
    assert p.returncode == 2
    assert str(protocol) in p.stderr and "field 'precomputed.1.samples.1': no such file" in p.stderr


def test_check_names_a_file_that_is_not_magres(tmp_path):
    protocol = _copy_example(tmp_path)
    (tmp_path / "magres" / "minimum0.magres").write_text("not a magres file\n")
    p = run_py("--check", "--no-preview", "--site", "local-htex", protocol)
    assert p.returncode == 2
    assert "field 'precomputed.0.static'" in p.stderr and "not a magres file" in p.stderr
