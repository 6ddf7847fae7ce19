"""Every shipped example passes `run.py --check` as shipped, or stops with exit 2 naming the inputs it takes
from an earlier run or that its user brings; the cheap one (precomputed NMR) also runs for real; a file an NMR
protocol names that is missing (or a magres file that is unreadable) stops --check with exit 2 naming the
field."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
PRECOMPUTED = ROOT / "examples" / "nmr_precomputed.yaml"


def run_py(*args, timeout=600):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


# inputs an example takes from an earlier run (the quickstart's run directory, a model file trained from it):
# on a fresh clone they are not there until that run has been made
FROM_EARLIER_RUNS = ("run", "foundation_model")


def _missing_earlier_inputs(example: Path) -> list[str]:
    data = yaml.safe_load(example.read_text())
    return [key for key in FROM_EARLIER_RUNS
            if isinstance(data.get(key), str) and not (example.parent / data[key]).exists()]


# inputs the user brings ("bring your own" in the example's header): the thesis's MOF cluster, its fine-tuned
# MACE and the measured spectrum are not shipped
BRING_YOUR_OWN = {"nmr_mfu4l.yaml": ("structure", "model.paths", "spectrum.experimental")}


def _missing_own_inputs(example: Path) -> list[str]:
    """The fields (as --check names them: model.paths.0) whose files are not there."""
    data, missing = yaml.safe_load(example.read_text()), []
    for dotted in BRING_YOUR_OWN.get(example.name, ()):
        value = data
        for key in dotted.split("."):
            value = value[key]
        names = {dotted: value} if isinstance(value, str) else {f"{dotted}.{i}": v for i, v in enumerate(value)}
        missing += [field for field, name in names.items() if not (example.parent / name).exists()]
    return missing


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_passes_check(example, tmp_path):
    """As shipped, every example passes --check; one that goes on from an earlier run (free energy,
    exploration, fine-tuning on the quickstart's run) passes once that run is there, and until then stops
    with exit 2 naming the missing input; one whose inputs the user brings (the MOF NMR example) stops with
    exit 2 naming each missing file's field until they are there."""
    p = run_py("--check", "--no-preview", "--site", "local-htex", "--run-dir", tmp_path / "run", example)
    missing, own = _missing_earlier_inputs(example), _missing_own_inputs(example)
    if missing or own:
        assert p.returncode == 2, p.stdout + p.stderr
        assert str(example.name) in p.stderr and "Traceback" not in p.stderr, p.stderr
        if missing:
            assert any(key in p.stderr for key in missing), p.stderr
        assert all(f"field '{field}': no such file" in p.stderr for field in own), p.stderr
    else:
        assert p.returncode == 0, p.stdout + p.stderr
        assert "is valid" in p.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # ~1 min: its 2000-orientation finite-speed spectra; CI checks it with --check above
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


def test_check_names_a_missing_nmr_structure_and_model(tmp_path):
    """An NMR protocol's structure and model files are checked before anything runs, like its magres files."""
    protocol = tmp_path / "nmr.yaml"
    data = yaml.safe_load((ROOT / "examples" / "nmr_bicarbonate.yaml").read_text())
    data["structure"] = "absent.xyz"
    protocol.write_text(yaml.safe_dump(data))
    p = run_py("--check", "--no-preview", "--site", "local-htex", protocol)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert str(protocol) in p.stderr and f"field 'structure': no such file {str(tmp_path / 'absent.xyz')!r}" in p.stderr
    shutil.copy(ROOT / "examples" / "structures" / "bicarbonate.xyz", tmp_path / "absent.xyz")
    del data["train"]
    data["model"] = {"model": "gap", "paths": ["gap.xml"]}
    protocol.write_text(yaml.safe_dump(data))
    p = run_py("--check", "--no-preview", "--site", "local-htex", protocol)
    assert p.returncode == 2 and "field 'model.paths.0': no such file" in p.stderr, p.stderr
    assert "field 'structure'" not in p.stderr
