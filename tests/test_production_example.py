"""examples/in2o3-co2-hydrogenation.yaml: the thesis's production protocol (chapter 3, appendix A).

Quantum ESPRESSO on In2O3 cannot run here; the tests check what `--check` builds, that the protocol
carries the thesis's settings, and the pw.x input the reference task would write for an intermediate.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from reactforge.schemas.protocol import load_protocol
from reactforge.tasks.context import TaskContext
from reactforge.tasks.references import make_calculator
from reactforge.workflows import sampling
from reactforge.workflows.catalysis_build import build_system, fixed_indices

from test_cli import ARCHER2_ENV, cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "in2o3-co2-hydrogenation.yaml"


@pytest.fixture(scope="module")
def protocol():
    return load_protocol(EXAMPLE)


@pytest.fixture(scope="module")
def system(protocol):
    return build_system(protocol)


def test_check_on_archer2_accepts_it_and_prints_the_plan():
    p = cli("--site", "archer2", "--check", EXAMPLE, env=ARCHER2_ENV)
    assert p.returncode == 0, p.stderr
    assert "bulk In32O48 (80 atoms), slab 80 atoms, active-site slab 79 atoms, elements C, H, In, O" in p.stdout
    assert "reference espresso, model gap" in p.stdout
    assert "24 dimers (4 each for C-C, C-H, C-O, H-H, H-O, O-O)" in p.stdout  # thesis Table A.1
    assert len(re.findall(r"^\s+reaction ", p.stdout, re.M)) == 5
    assert "--partition=standard" in p.stdout and "--account=e999" in p.stdout


def test_the_thesis_settings(protocol, system):
    ref = protocol.reference
    assert ref.code == "espresso" and set(ref.pseudopotentials) == {"In", "O", "C", "H"}
    assert (ref.ecutwfc_Ry, ref.kspacing_per_A, ref.smearing, ref.smearing_width_eV, ref.conv_thr_eV) == (
        65, 0.25, "gaussian", 0.1, 1e-7)
    gap = protocol.model
    assert gap.model == "gap" and [(s.rcut_hard_A, s.rcut_soft_A) for s in gap.soap] == [(4.0, 3.5), (6.0, 5.5)]
    assert all((s.l_max, s.alpha_max, s.delta, s.zeta, s.n_sparse) == (4, 8, 0.1, 4, 2500) for s in gap.soap)
    assert (gap.sigma_energy_eV, gap.sigma_force_eV_per_A) == (0.001, 0.01)
    assert protocol.sigma_thr_eV == 0.05 and protocol.parameters.b6_neb.n_images == 10
    assert protocol.parameters.b6_neb.precon == "Exp" and protocol.validation.enabled
    assert len(fixed_indices(system.site_slab)) == 40
    assert len(protocol.intermediates) == 10 and len(protocol.reactions) == 5


def test_intermediates_are_sane_structures(system):
    n = len(system.site_slab)
    for name, atoms in system.intermediates.items():
        d = atoms.get_all_distances(mic=True)
        np.fill_diagonal(d, np.inf)
        ads = np.arange(n, len(atoms))
        # no two atoms closer than an O-H bond, no adsorbate atom loose from the rest (> 2.5 Å from all)
        assert d.min() > 0.95, name
        assert (d[ads].min(axis=1) < 2.5).all(), name
        # every adsorbate sits at the active site (the thesis places within 3 Å of the vacancy)
        offsets = atoms.positions[ads] - system.site_position
        assert np.linalg.norm(offsets[:, :2].mean(axis=0)) < 3.0, name
    # the rate-limiting step's configuration has the thesis's size: 84 atoms
    assert len(system.intermediates["HCOO+H"]) == 84


def test_reactions_permute_like_atoms_with_the_prefilter(protocol, system):
    P6 = protocol.parameters.b6_neb
    counts = {}
    for r in protocol.reactions:
        counts[r.name] = len(sampling.like_atom_permutations(
            system.intermediates[r.initial], system.intermediates[r.final], system.adsorbate_indices(r.initial),
            P6.permutation_limit, P6.permutations_kept))
    # C O O H H H H: 2 × 24 = 48 orderings > the limit of 24, so the geometric prefilter keeps 6
    assert counts == {"CO2-H-to-HCOO": 2, "HCOO-H-to-H2COO": 4, "H2COO-to-H2CO-O": 4,
                      "H2CO-H-to-H3CO": 12, "H3CO-H-to-CH3OH": 6}


def test_pw_input_of_an_intermediate(protocol, system, tmp_path):
    """The pw.x input the single-point task writes for HCOO + H (84 atoms), with stand-in UPF files."""
    ref = protocol.reference.model_copy(update={"pseudo_dir": str(tmp_path / "pseudo")})
    (tmp_path / "pseudo").mkdir()
    for name in ref.pseudopotentials.values():
        (tmp_path / "pseudo" / name).write_text("stand-in\n")
    atoms = system.intermediates["HCOO+H"]
    calc = make_calculator(ref, atoms, TaskContext(workdir=tmp_path / "sp"))
    calc.write_inputfiles(atoms, ["energy", "forces"])
    text = (tmp_path / "sp" / "espresso.pwi").read_text()
    assert re.search(r"ecutwfc\s*=\s*65", text) and re.search(r"smearing\s*=\s*'gaussian'", text)
    assert re.search(r"nat\s*=\s*84", text) and re.search(r"ntyp\s*=\s*4", text)
    assert "In.pbe-dn-kjpaw_psl.1.0.0.UPF" in text
    # 14.3 Å × 10.1 Å in plane at 0.25 Å⁻¹ (2π included): 2 × 3; one k-point across the vacuum
    assert re.search(r"K_POINTS automatic\s+2 3 1 +0 0 0", text)
