"""Block 6's path criterion: the reference forces across the band on the labelled images (what a
reference NEB started from the band sees at step 0). EMT, a Cu adatom hopping between hollows of Cu(100)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.calculators.emt import EMT
from ase.mep import NEB
from ase.optimize import BFGS, FIRE

from reactforge.schemas.protocol import load_protocol
from reactforge.workflows import catalysis_build as build
from reactforge.workflows.band import perpendicular_fmax

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cu-adatom-hop.yaml"


@pytest.fixture(scope="module")
def emt_band():
    """The EMT minimum energy path of the hop (3 images, climbing), and the slab's fixed atoms."""
    system = build.build_system(load_protocol(EXAMPLE))
    ends = []
    for name in ("Cu@hollow-a", "Cu@hollow-b"):
        atoms = system.intermediates[name].copy()
        atoms.calc = EMT()
        BFGS(atoms, logfile=None).run(fmax=0.01)
        ends.append(atoms)
    images = [ends[0], *(ends[0].copy() for _ in range(3)), ends[1]]
    for image in images[1:-1]:
        image.calc = EMT()
    neb = NEB(images, climb=True, method="improvedtangent")
    neb.interpolate("idpp")
    assert FIRE(neb, logfile=None).run(fmax=0.02, steps=500)
    return [a.copy() for a in images], build.fixed_indices(system.site_slab)


def _across(images, fixed):
    energies, forces = [], {}
    for k, image in enumerate(images):
        a = image.copy()
        a.calc = EMT()
        energies.append(a.get_potential_energy())
        forces[k] = a.get_forces(apply_constraint=False)
    return perpendicular_fmax(images, energies, {k: forces[k] for k in (1, 2, 3)}, fixed)


def test_a_band_on_the_reference_path_feels_no_force_across_it(emt_band):
    images, fixed = emt_band
    assert set(_across(images, fixed)) == {1, 2, 3}
    assert max(_across(images, fixed).values()) < 0.05  # the thesis's step-0 test


def test_a_band_beside_the_path_is_caught_though_its_energies_are_close(emt_band):
    images, fixed = emt_band
    off = [a.copy() for a in images]
    across = np.array([1.0, -1.0, 0.0]) / np.sqrt(2)  # the hop runs along (1, 1, 0)
    for k, shift in ((1, 0.09), (2, 0.18), (3, 0.09)):  # 0.18 Å off at the saddle
        off[k].positions[-1] += shift * across
    before = [EMT().get_potential_energy(a.copy()) for a in images[1:-1]]
    after = [EMT().get_potential_energy(a.copy()) for a in off[1:-1]]
    assert max(abs(b - a) for a, b in zip(before, after)) < 0.1  # energies barely tell
    assert max(_across(off, fixed).values()) > 0.3


@pytest.mark.slow
def test_block6_labels_a_band_until_it_lies_on_the_reference_path(tmp_path):
    """Blocks 0 and 6 only: the first model has seen bulk copper alone, so its band starts beside the
    EMT path; block 6 ends only once both the energies and the forces across the band hold (~1 min)."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["blocks"] = [0, 6]
    data["parameters"]["b0_initial"] = {"n_rattled": 2}
    data["parameters"]["b6_neb"].update(n_images=3, max_iterations=8, max_steps=150)
    data["validation"] = {"enabled": False}
    protocol = tmp_path / "p.yaml"
    protocol.write_text(yaml.safe_dump(data))
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "--site", "local", "--run-dir", str(tmp_path / "run"),
                        "--no-live", str(protocol)], capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    block = json.loads((tmp_path / "run" / "summary.json").read_text())["blocks"]["neb"]
    history = block["history"]
    first, last = history[0], history[-1]
    assert first["max_reference_perpendicular_fmax_eV_per_A"] > 0.1  # started beside the path
    assert block["termination_met"]
    assert last["max_abs_energy_error_eV"] < 0.05 and last["max_reference_perpendicular_fmax_eV_per_A"] < 0.1
    for h in history[:-1]:  # no earlier iteration met both
        assert h["max_abs_energy_error_eV"] >= 0.05 or h["max_reference_perpendicular_fmax_eV_per_A"] >= 0.1
    row = last["barriers"]["hop"]
    assert row["reference_perpendicular_fmax_eV_per_A"] == last["max_reference_perpendicular_fmax_eV_per_A"]
    assert "reference_perpendicular_fmax_eV_per_A" in (tmp_path / "run" / "report" / "index.html").read_text()
