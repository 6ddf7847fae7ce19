"""Reference calculators: the inputs they write say what the spec asked; outputs are read with ASE's readers."""
from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, fcc111, molecule
from ase.io import read
from ase.units import Ry, kB

from reactforge.schemas.tasks import CastepReference, EspressoReference, SCFFallback, XTBReference
from reactforge.tasks.context import TaskContext
from reactforge.tasks.errors import SCFNotConverged, TransientError
from reactforge.tasks.references import (
    LaunchedCastep,
    ReferenceFailed,
    ReferenceSetupError,
    castep_scf_failed,
    classify_launch_failure,
    kpoint_grid,
    vacuum_directions,
    make_calculator,
    read_castep_output,
)

DATA = Path(__file__).parent / "data"
CASTEP_OUT = DATA / "castep" / "si8-md.castep"
SCF_WARNING = " *Warning* max. SCF cycles performed but system has not reached the groundstate.\n"


def _ctx(tmp_path, name="w", launch=""):
    return TaskContext(workdir=tmp_path / name, launch=launch)


def _param(path: Path) -> dict[str, str]:
    """KEY: value lines of a CASTEP .param/.cell file."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*([A-Za-z_]+)\s*[:=]\s*(.+?)\s*$", line)
        if m and not line.lstrip().startswith("#"):
            out[m.group(1).upper()] = m.group(2)
    return out


# ---------------------------------------------------------------------------- k-points


def test_kpoint_grid_includes_2pi_and_skips_non_periodic_directions():
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    # |b| = 2π/3.6 Å⁻¹ = 1.745; 1.745/0.25 = 6.98 -> 7 (at most 0.25 Å⁻¹ between points)
    assert kpoint_grid(cu, 0.25) == (7, 7, 7)
    assert kpoint_grid(cu, 0.5) == (4, 4, 4)
    assert kpoint_grid(cu, None) == (1, 1, 1)
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)  # pbc = (True, True, False)
    grid = kpoint_grid(slab, 0.25)
    assert grid[2] == 1 and grid[0] > 1 and grid[0] == grid[1]
    assert kpoint_grid(molecule("H2O"), 0.25) == (1, 1, 1)


def test_kpoint_grid_one_point_across_a_slabs_vacuum():
    # a slab made 3D periodic for a plane-wave code: 6.6 Å of Cu and 16 Å of vacuum along c;
    # the density rule alone would put 2 k-points along the normal (|b3| = 2π/22.6 Å)
    slab = fcc111("Cu", size=(2, 2, 4), vacuum=8.0)
    slab.pbc = True
    assert vacuum_directions(slab) == [False, False, True]
    grid = kpoint_grid(slab, 0.25)
    assert grid[2] == 1 and grid[0] == grid[1] == kpoint_grid(fcc111("Cu", size=(2, 2, 4), vacuum=8.0), 0.25)[0]
    # the rule looks at gaps, not at cell length: a long bulk cell keeps its k-points along c
    long_bulk = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((1, 1, 6))
    assert vacuum_directions(long_bulk) == [False, False, False] and kpoint_grid(long_bulk, 0.25)[2] == 2
    # an empty layer thinner than the threshold is not vacuum
    thin = fcc111("Cu", size=(1, 1, 3), vacuum=1.5)
    thin.pbc = True
    assert not vacuum_directions(thin)[2]


# ---------------------------------------------------------------------------- xTB


def test_xtb_calculator_settings_and_fallback():
    ref = XTBReference(accuracy=0.5, electronic_temperature_K=500.0, max_iterations=40,
                       fallback=SCFFallback(mixing_beta=0.1, max_scf_steps=300, smearing_width_eV=0.1))
    calc = make_calculator(ref, molecule("H2O"), None)
    p = calc.parameters
    assert (p.method, p.accuracy, p.electronic_temperature, p.max_iterations, p.verbosity) == (
        "GFN2-xTB", 0.5, 500.0, 40, 0)
    fb = make_calculator(ref, molecule("H2O"), None, fallback=True).parameters
    assert fb.max_iterations == 300 and fb.mixer_damping == 0.1
    assert fb.electronic_temperature == pytest.approx(0.1 / kB)


# ---------------------------------------------------------------------------- Quantum ESPRESSO input


def _qe_ref(**kw):
    base = dict(pseudopotentials={"Cu": "Cu.pbe-kjpaw.UPF"}, ecutwfc_Ry=30.0, smearing="mv",
                smearing_width_eV=0.2, conv_thr_eV=1e-7, mixing_beta=0.4, max_scf_steps=80)
    base.update(kw)
    return EspressoReference(**base)


def _qe_input(calc, atoms) -> str:
    calc.write_inputfiles(atoms, ["energy", "forces", "stress"])
    return (Path(calc.directory) / "espresso.pwi").read_text()


def _namelist_value(text: str, key: str) -> str:
    m = re.search(rf"^\s*{re.escape(key)}\s*=\s*(\S+)", text, re.M)
    assert m, f"{key} not in the pw.x input"
    return m.group(1).strip("'")


def test_espresso_input_reflects_spec(tmp_path):
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    ctx = _ctx(tmp_path, launch="mpirun --allow-run-as-root -n 2")
    calc = make_calculator(_qe_ref(extra_input={"system": {"nosym": True}}), cu, ctx)
    assert calc.profile.command == "mpirun --allow-run-as-root -n 2 pw.x"
    assert Path(calc.directory) == ctx.workdir
    text = _qe_input(calc, cu)
    assert float(_namelist_value(text, "ecutwfc")) == 30.0
    assert float(_namelist_value(text, "ecutrho")) == 240.0  # default 8 × ecutwfc
    assert _namelist_value(text, "occupations") == "smearing"
    assert _namelist_value(text, "smearing") == "mv"
    assert float(_namelist_value(text, "degauss")) == pytest.approx(0.2 / Ry)
    assert float(_namelist_value(text, "conv_thr")) == pytest.approx(1e-7 / Ry)  # eV -> Ry
    assert float(_namelist_value(text, "mixing_beta")) == 0.4
    assert int(_namelist_value(text, "electron_maxstep")) == 80
    assert _namelist_value(text, "tprnfor") == ".true." and _namelist_value(text, "tstress") == ".true."
    assert _namelist_value(text, "nosym") == ".true."
    assert _namelist_value(text, "pseudo_dir") == "/usr/share/espresso/pseudo"
    assert re.search(r"K_POINTS automatic\s+7 7 7 +0 0 0", text)


def test_espresso_fallback_and_gamma_only(tmp_path):
    ref = _qe_ref(kspacing_per_A=None, fallback=SCFFallback(mixing_beta=0.15, max_scf_steps=400,
                                                             smearing_width_eV=0.5))
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    text = _qe_input(make_calculator(ref, cu, _ctx(tmp_path), fallback=True), cu)
    assert float(_namelist_value(text, "mixing_beta")) == 0.15
    assert int(_namelist_value(text, "electron_maxstep")) == 400
    assert float(_namelist_value(text, "degauss")) == pytest.approx(0.5 / Ry)
    assert "K_POINTS gamma" in text


def test_espresso_molecule_gets_no_stress_and_gamma(tmp_path):
    h2o = molecule("H2O", vacuum=4.0)  # cell, pbc False
    ref = EspressoReference(pseudopotentials={"H": "H.pbe-kjpaw.UPF", "O": "O.pbe-kjpaw.UPF"})
    text = _qe_input(make_calculator(ref, h2o, _ctx(tmp_path)), h2o)
    assert _namelist_value(text, "tstress") == ".false."
    assert "K_POINTS gamma" in text


def test_espresso_setup_errors(tmp_path):
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    with pytest.raises(ReferenceSetupError, match="no pseudopotential given for \\['Cu'\\]"):
        make_calculator(EspressoReference(pseudopotentials={"H": "H.pbe-kjpaw.UPF"}), cu, _ctx(tmp_path))
    with pytest.raises(ReferenceSetupError, match="Cu.missing.UPF"):
        make_calculator(_qe_ref(pseudopotentials={"Cu": "Cu.missing.UPF"}), cu, _ctx(tmp_path))
    with pytest.raises(ReferenceSetupError, match="initial magnetic moments"):
        make_calculator(_qe_ref(spin_polarised=True), cu, _ctx(tmp_path))
    with pytest.raises(ReferenceSetupError, match="3D cell"):
        make_calculator(_qe_ref(pseudopotentials={"H": "H.pbe-kjpaw.UPF", "O": "O.pbe-kjpaw.UPF"}),
                        molecule("H2O"), _ctx(tmp_path))


# ---------------------------------------------------------------------------- CASTEP input


def _castep_ref(**kw):
    base = dict(xc_functional="PBE", cut_off_energy_eV=500.0, kpoint_spacing_per_A=0.25, smearing_width_eV=0.15,
                elec_energy_tol_eV=4e-7, mixing_beta=0.3, max_scf_steps=70,
                pseudopotentials={"Cu": "Cu_C19_PBE_OTF.usp"}, extra_param={"opt_strategy": "Speed"})
    base.update(kw)
    return CastepReference(**base)


def _prepare(calc, atoms):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calc.prepare_input_files(atoms)


def test_castep_inputs_reflect_spec(tmp_path):
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    ctx = _ctx(tmp_path, launch="srun --hint=nomultithread")
    calc = make_calculator(_castep_ref(), cu, ctx)
    assert calc._castep_command == "srun --hint=nomultithread castep.mpi"
    _prepare(calc, cu)
    param = _param(ctx.workdir / "castep.param")
    assert param["TASK"] == "SinglePoint"
    assert param["XC_FUNCTIONAL"] == "PBE"
    assert float(param["CUT_OFF_ENERGY"]) == 500.0
    assert float(param["SMEARING_WIDTH"]) == 0.15
    assert param["SMEARING_SCHEME"] == "Gaussian"
    assert float(param["ELEC_ENERGY_TOL"]) == pytest.approx(4e-7 / 4)  # per atom, 4 atoms
    assert float(param["MIX_CHARGE_AMP"]) == 0.3
    assert int(param["MAX_SCF_CYCLES"]) == 70
    assert param["CALCULATE_STRESS"] == "True"
    assert param["OPT_STRATEGY"] == "Speed"
    cell_text = (ctx.workdir / "castep.cell").read_text()
    cell = _param(ctx.workdir / "castep.cell")
    # CASTEP's 1/Å omit the 2π of the spec's spacing
    assert float(cell["KPOINT_MP_SPACING"]) == pytest.approx(0.25 / (2 * np.pi))
    assert re.search(r"%BLOCK SPECIES_POT\s+Cu Cu_C19_PBE_OTF.usp\s+%ENDBLOCK SPECIES_POT", cell_text)
    # ASE reads the generated .cell back to the same structure
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = read(ctx.workdir / "castep.cell", format="castep-cell", calculator_args={"keyword_tolerance": 3})
    assert back.get_chemical_symbols() == cu.get_chemical_symbols()
    np.testing.assert_allclose(back.cell[:], cu.cell[:], atol=1e-6)
    np.testing.assert_allclose(back.positions, cu.positions, atol=1e-6)


def test_castep_slab_gets_an_explicit_grid_with_one_point_along_the_normal(tmp_path):
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=8.0)
    slab.pbc = True
    ctx = _ctx(tmp_path)
    calc = make_calculator(_castep_ref(), slab, ctx)
    _prepare(calc, slab)
    cell = _param(ctx.workdir / "castep.cell")
    assert "KPOINT_MP_SPACING" not in cell  # CASTEP's spacing rule would sample the vacuum too
    assert cell["KPOINT_MP_GRID"].split() == [str(n) for n in kpoint_grid(slab, 0.25)]
    assert cell["KPOINT_MP_GRID"].split()[2] == "1"


def test_castep_fallback_serial_and_gamma(tmp_path):
    ref = _castep_ref(kpoint_spacing_per_A=None,
                      fallback=SCFFallback(mixing_beta=0.05, max_scf_steps=333, smearing_width_eV=0.4))
    h2o = molecule("H2O", vacuum=4.0)
    ctx = _ctx(tmp_path)
    calc = make_calculator(ref, h2o, ctx, fallback=True)
    assert calc._castep_command == "castep.serial"  # no launch prefix
    _prepare(calc, h2o)
    param = _param(ctx.workdir / "castep.param")
    assert float(param["MIX_CHARGE_AMP"]) == 0.05
    assert int(param["MAX_SCF_CYCLES"]) == 333
    assert float(param["SMEARING_WIDTH"]) == 0.4
    assert param["CALCULATE_STRESS"] == "False"
    cell = _param(ctx.workdir / "castep.cell")
    assert cell["KPOINT_MP_GRID"].split() == ["1", "1", "1"]
    assert "KPOINT_MP_SPACING" not in cell


# ---------------------------------------------------------------------------- CASTEP output


def test_castep_output_read_with_ase_reader():
    atoms = read_castep_output(CASTEP_OUT)
    assert len(atoms) == 8
    # last forces/stress blocks of the file
    np.testing.assert_allclose(atoms.get_forces()[0], [-0.09963, 0.10729, -0.00665])
    np.testing.assert_allclose(atoms.get_forces()[6], [-0.26870, -0.12445, -0.14684])
    from ase.units import GPa

    np.testing.assert_allclose(atoms.get_stress() / GPa, [0.390672, 0.388091, 0.385978, -0.276337, -0.061901,
                                                          -0.144025])
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(-1351.294716003)


def test_castep_calculator_reads_output_into_input_order(tmp_path):
    # The path a run takes after CASTEP exits: Castep.read() maps results back onto the input atoms.
    ref_atoms = read_castep_output(CASTEP_OUT)
    calc = make_calculator(CastepReference(), ref_atoms, _ctx(tmp_path))
    assert isinstance(calc, LaunchedCastep)
    calc.atoms = ref_atoms.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calc.read(str(CASTEP_OUT))
    np.testing.assert_allclose(calc.results["forces"], ref_atoms.get_forces())
    assert calc.results["free_energy"] == pytest.approx(-1351.294716003)


def test_castep_scf_non_convergence_is_recognised(tmp_path):
    lines = CASTEP_OUT.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("Final energy, E"))
    bad = tmp_path / "bad.castep"
    bad.write_text("".join(lines[:at] + [SCF_WARNING] + lines[at:]))
    assert castep_scf_failed(bad.read_text())
    with pytest.raises(SCFNotConverged):
        read_castep_output(bad)
    # CASTEP appends every run to the same file: an unconverged earlier run does not taint a later one
    appended = tmp_path / "appended.castep"
    appended.write_text(bad.read_text() + CASTEP_OUT.read_text())
    assert not castep_scf_failed(appended.read_text())
    assert len(read_castep_output(appended)) == 8


# ---------------------------------------------------------------------------- launcher failure classes


@pytest.mark.parametrize(
    "rc, text, expected",
    [
        (0 - 9, "", TransientError),
        (137, "", TransientError),
        (143, "slurmstepd: error: *** STEP 123.0 ON nid001 CANCELLED AT 2026-01-01T00:00:00 ***", TransientError),
        (1, "slurmstepd: error: *** JOB 123 ON nid001 CANCELLED AT 2026 DUE TO TIME LIMIT ***", TransientError),
        (1, "srun: error: Node failure on nid004", TransientError),
        (1, "ORTE has lost communication with a remote daemon.", TransientError),
        (1, "mpirun noticed that process rank 1 with PID 0 on node n1 exited on signal 9 (Killed).", TransientError),
        (1, "mpirun was unable to find the specified executable file", ReferenceSetupError),
        (127, "/bin/sh: 1: pw.x: command not found", ReferenceSetupError),
        (1, "srun: error: nid001: task 0: Exited with exit code 1", ReferenceFailed),
        (1, "", ReferenceFailed),
    ],
)
def test_launch_failure_classes(rc, text, expected):
    assert type(classify_launch_failure("espresso", rc, text)) is expected


def test_code_error_outranks_launcher_noise():
    text = "MPI_ABORT was invoked on rank 0\n[vm] Set MCA parameter \"orte_base_help_aggregate\" to 0"
    err = classify_launch_failure("espresso", 1, text, code_error="Error in routine read_namelists (1)")
    assert type(err) is ReferenceFailed and "read_namelists" in str(err)


@pytest.mark.skipif(shutil.which("castep.serial") is not None, reason="a CASTEP binary exists here")
def test_castep_missing_binary_is_a_setup_error(tmp_path):
    from reactforge.schemas.tasks import SinglePointSpec
    from reactforge.tasks.singlepoint import run

    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    ctx = _ctx(tmp_path)
    with pytest.raises(ReferenceSetupError, match="castep.serial' not found on PATH"):
        run(SinglePointSpec(reference=_castep_ref()), [cu], ctx)
    assert (ctx.workdir / "castep.param").is_file()  # inputs were written before the launch
