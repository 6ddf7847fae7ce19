"""The nmrshielding task: real magres outputs parsed and mapped onto the input structure; CASTEP and
QE-GIPAW inputs written as the codes expect; clear errors when a code is absent."""
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from reactforge.schemas.results import NMRShieldingResult
from reactforge.schemas.tasks import NMRShieldingSpec
from reactforge.tasks import nmrshielding, run_task
from reactforge.tasks.context import TaskContext
from reactforge.tasks.references import ReferenceSetupError

DATA = next((d for d in (Path(__file__).parent / "data" / "magres",
                         Path(__file__).resolve().parents[2] / "shared" / "data" / "magres") if d.exists()),
            Path(__file__).parent / "data" / "magres")
EDIZUM = DATA / "EDIZUM.magres"
needs_data = pytest.mark.skipif(not EDIZUM.exists(), reason="magres data not present")

# Excerpt (two of nine atoms) of gipaw.x 7.6 output for α-quartz, QE-GIPAW examples/quartz-ncpp: the
# QE-GIPAW flavour of the format (global atom indices, a 'sus' line).
GIPAW_MAGRES = """#$magres-abinitio-v1.0

[calculation]
calc_code              QE-GIPAW
calc_code_version      7.6
calc_prefix            quartz
calc_xcfunctional      PBE
[/calculation]
[atoms]
  units lattice Angstrom
  lattice     2.456196   -4.254274    0.000000    2.456196    4.254274    0.000000    0.000000    0.000000    5.403631

  units atom Angstrom
  atom Si Si       1      1.154658   -1.999934    1.801210
  atom O  O        4      1.673406   -0.623251    1.158539
[/atoms]

[magres]
  units sus 10^-6.cm^3.mol^-1
  sus      -66.3260      0.0000      0.0000      0.0000    -66.3258     -0.0366      0.0000     -0.0025    -66.6472

  units ms ppm
  ms Si       1      441.1530      0.8199      6.1640      0.8197    440.1937      3.5537    -11.3981     -6.5811    438.0746
  ms O        4      203.8759     22.5722    -20.1132     21.6735    226.1740    -28.1126    -21.0085    -27.3739    217.6083
[/magres]
"""


@needs_data
def test_precomputed_magres_maps_onto_a_reordered_structure(tmp_path):
    from ase.io import read

    ref = read(EDIZUM, format="magres")
    perm = np.random.default_rng(0).permutation(len(ref))
    structure = ref[perm]
    structure.calc = None
    spec = NMRShieldingSpec(code="precomputed", magres_file=str(EDIZUM))
    res = run_task(spec, [structure], TaskContext(workdir=tmp_path))
    assert isinstance(res, NMRShieldingResult)
    assert np.allclose(res.shielding_ppm, ref.get_array("ms")[perm])
    assert np.allclose(res.efg_au, ref.get_array("efg")[perm])
    assert res.atoms.get_chemical_symbols() == structure.get_chemical_symbols()
    # round trip through JSON (the engine's journal)
    again = NMRShieldingResult.model_validate_json(res.model_dump_json())
    assert np.allclose(again.shielding_ppm, res.shielding_ppm)


@needs_data
def test_precomputed_magres_of_another_structure_is_rejected(tmp_path):
    from ase.io import read

    other = read(EDIZUM, format="magres")
    other.positions[0] += 0.3
    spec = NMRShieldingSpec(code="precomputed", magres_file=str(EDIZUM))
    with pytest.raises(ValueError, match="do not match"):
        nmrshielding.run(spec, [other], TaskContext(workdir=tmp_path))


def test_qe_gipaw_magres_flavour_parses(tmp_path):
    f = tmp_path / "quartz.nmr.magres"
    f.write_text(GIPAW_MAGRES)
    res = nmrshielding.run(NMRShieldingSpec(code="precomputed", magres_file=str(f), efg=False), [],
                           TaskContext(workdir=tmp_path))
    assert res.atoms.get_chemical_symbols() == ["Si", "O"]
    assert np.trace(res.shielding_ppm[1]) / 3 == pytest.approx((203.8759 + 226.1740 + 217.6083) / 3)
    assert res.efg_au is None
    with pytest.raises(Exception, match="EFG tensors requested"):
        nmrshielding.run(NMRShieldingSpec(code="precomputed", magres_file=str(f)), [], TaskContext(workdir=tmp_path))


def test_spec_validation():
    with pytest.raises(ValidationError, match="magres_file"):
        NMRShieldingSpec(code="precomputed")
    with pytest.raises(ValidationError, match="extra"):
        NMRShieldingSpec(code="castep", cutoff=500)


def _water():
    from ase.build import molecule

    a = molecule("H2O")
    a.center(vacuum=4.0)
    a.pbc = True
    return a


def test_castep_magres_input():
    spec = NMRShieldingSpec(code="castep", cut_off_energy_eV=600, xc_functional="PBE", kpoint_spacing_per_A=0.5,
                            pseudopotentials={"O": "O_00.usp"})
    cell, param = nmrshielding.castep_inputs(spec, _water())
    assert "TASK : MAGRES" in param and "MAGRES_TASK : NMR" in param
    assert "CUT_OFF_ENERGY : 600.0 eV" in param and "XC_FUNCTIONAL : PBE" in param
    # a molecule in an 8 Å × 9.5 Å × 8.6 Å box: ≥ 5 Å of vacuum along every axis, so Γ only where the
    # 0.5 Å⁻¹ spacing alone would give 2 2 2
    assert "KPOINTS_MP_GRID 1 1 1" in cell
    assert "%BLOCK POSITIONS_FRAC" in cell and "O O_00.usp" in cell
    shielding_only = NMRShieldingSpec(code="castep", efg=False)
    assert "MAGRES_TASK : SHIELDING" in nmrshielding.castep_inputs(shielding_only, _water())[1]


def test_missing_castep_binary_is_a_setup_error(tmp_path):
    spec = NMRShieldingSpec(code="castep", executable="castep-binary-that-is-not-installed")
    with pytest.raises(ReferenceSetupError, match="not found on PATH"):
        nmrshielding.run(spec, [_water()], TaskContext(workdir=tmp_path))
    assert (tmp_path / "magres.param").read_text().startswith("TASK : MAGRES")


def test_qe_gipaw_inputs(tmp_path):
    spec = NMRShieldingSpec(code="qe-gipaw", cut_off_energy_eV=80 * 13.605693, pseudo_dir="/pseudo",
                            pseudopotentials={"O": "O.pbe-tm-gipaw.UPF", "H": "H.pbe-tm-gipaw.UPF"})
    pw, jobs = nmrshielding.gipaw_inputs(spec, _water())
    assert "prefix" in pw and "'gipaw'" in pw and "O.pbe-tm-gipaw.UPF" in pw
    import re

    assert float(re.search(r"ecutwfc\s*=\s*([\d.eE+-]+)", pw).group(1)) == pytest.approx(80.0)
    assert "K_POINTS automatic" in pw
    assert "job = 'nmr'" in jobs["nmr"] and "job = 'efg'" in jobs["efg"]
    with pytest.raises(ReferenceSetupError, match="GIPAW pseudopotential"):
        nmrshielding.gipaw_inputs(NMRShieldingSpec(code="qe-gipaw"), _water())
    spec.pw_executable = "pw-binary-that-is-not-installed"
    with pytest.raises(ReferenceSetupError, match="not found on PATH"):
        nmrshielding.run(spec, [_water()], TaskContext(workdir=tmp_path))
