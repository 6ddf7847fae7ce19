"""The nmrshielding task's NWChem backend (GIAO shieldings and EFGs of molecules and clusters).

Real NWChem runs on H2O, compared with published values for the same method:
- HF/STO-3G at the geometry of NWChem's QA test QA/tests/prop_h2o (prop_h2o.nw, reference output
  prop_h2o.out, github.com/nwchemgit/nwchem): σ_iso(17O) = 232.4556 ppm, σ_iso(1H) = 28.6669 ppm,
  O field gradient principal components 2.715784, −2.522999, −0.192785 a.u. (η = 0.858026).
  Same method, basis and geometry: only the CPHF/SCF convergence differs (tolerance 1e-4), hence 0.01 ppm
  and 1e-4 a.u.
- HF near the basis-set limit at the experimental equilibrium geometry (r = 0.9572 Å, ∠ = 104.52°):
  σ_iso(17O) = 328.1 ppm, σ_iso(1H) = 30.7 ppm (SCF, J. Gauss and J. F. Stanton, J. Chem. Phys. 104, 2574
  (1996)). Here HF/pcS-2 (Jensen's shielding basis, J. Chem. Theory Comput. 4, 719 (2008)); the two bases
  are each within ~1 ppm (17O) and ~0.1 ppm (1H) of the HF limit, hence 2 ppm and 0.3 ppm.
  C_Q(17O) against the gas-phase experiment, C_Q = +10.17 MHz, η = 0.75 (Verhoeven, Dymanus and Bluyssen,
  J. Chem. Phys. 50, 3330 (1969)): HF lacks correlation and overestimates the O field gradient by ~10 %, so
  15 % on C_Q and 0.1 on η; what this pins down is the units, the sign convention and the frame.
Skipped, with the reason, where `nwchem` is not installed (`make system-deps` installs it).
"""
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.units import Bohr

from reactforge.schemas.tasks import NMRShieldingSpec
from reactforge.tasks import nmrshielding, run_task
from reactforge.tasks.context import TaskContext
from reactforge.tasks.errors import ReferenceFailed, ReferenceSetupError, SCFNotConverged
from reactforge.tasks.nmr.tensors import cq_Hz, eta_q, isotropic, read_magres

CAPTURED = Path(__file__).parent / "data" / "nwchem" / "h2o_hf_sto3g_property.out"
needs_nwchem = pytest.mark.skipif(shutil.which("nwchem") is None,
                                  reason="nwchem not installed (make system-deps installs Debian's nwchem)")

# QA/tests/prop_h2o/prop_h2o.nw geometry (bohr)
QA_H2O_BOHR = [[0.0, 0.0, 0.11786656], [0.0, 1.84118838, -0.93531364], [0.0, -1.84118838, -0.93531364]]
QA_SIGMA_ISO = {"O": 232.4556, "H": 28.6669}
QA_EFG_O_NWCHEM = [2.715784, -2.522999, -0.192785]  # principal components as NWChem prints them (−∂²V)


def qa_h2o() -> Atoms:
    return Atoms("OH2", positions=np.array(QA_H2O_BOHR) * Bohr)


def experimental_h2o() -> Atoms:
    r, half = 0.9572, np.radians(104.52) / 2
    return Atoms("OH2", positions=[[0, 0, 0], [0, r * np.sin(half), r * np.cos(half)],
                                   [0, -r * np.sin(half), r * np.cos(half)]])


def qa_cq_Hz() -> float:
    """C_Q(17O) of the QA reference: its V in the magres convention is minus what NWChem prints."""
    return float(cq_Hz(-np.diag(QA_EFG_O_NWCHEM), "17O"))


def run_nwchem(atoms, tmp_path, **spec):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return run_task(NMRShieldingSpec(code="nwchem", **spec), [atoms], TaskContext(workdir=tmp_path))


# ------------------------------------------------------------------------------------------ real runs


@needs_nwchem
def test_h2o_hf_sto3g_reproduces_nwchem_qa_prop_h2o(tmp_path):
    res = run_nwchem(qa_h2o(), tmp_path, method="HF", basis="sto-3g")
    sigma, efg = np.array(res.shielding_ppm), np.array(res.efg_au)
    assert res.source == "nwchem:HF/sto-3g"
    assert isotropic(sigma[0]) == pytest.approx(QA_SIGMA_ISO["O"], abs=0.01)
    assert isotropic(sigma[1:]) == pytest.approx([QA_SIGMA_ISO["H"]] * 2, abs=0.01)
    assert sorted(np.linalg.eigvalsh(efg[0])) == pytest.approx(sorted(-np.array(QA_EFG_O_NWCHEM)), abs=1e-4)
    assert cq_Hz(efg[0], "17O") == pytest.approx(qa_cq_Hz(), rel=1e-4)
    assert eta_q(efg[0]) == pytest.approx(0.858026, abs=1e-4)
    # the task's record: a magres file that ASE and the project's reader both read back
    from ase.io import read

    back = read(tmp_path / "nwchem.magres", format="magres")
    assert np.allclose(back.get_array("ms"), sigma) and np.allclose(back.get_array("efg"), efg)
    assert np.allclose(read_magres(tmp_path / "nwchem.magres").positions, qa_h2o().positions)


@needs_nwchem
def test_h2o_hf_pcs2_against_gauss_stanton_and_experiment(tmp_path):
    res = run_nwchem(experimental_h2o(), tmp_path, method="HF", basis="pcS-2")
    sigma, efg = np.array(res.shielding_ppm), np.array(res.efg_au)
    assert isotropic(sigma[0]) == pytest.approx(328.1, abs=2.0)
    assert isotropic(sigma[1:]) == pytest.approx([30.7, 30.7], abs=0.3)
    cq = cq_Hz(efg[0], "17O")
    assert cq > 0 and cq == pytest.approx(10.17e6, rel=0.15)
    assert eta_q(efg[0]) == pytest.approx(0.75, abs=0.1)
    # largest component perpendicular to the molecular plane (x here): the tensor is in the input frame
    w, v = np.linalg.eigh(efg[0])
    assert abs(v[:, np.argmax(abs(w))][0]) == pytest.approx(1.0, abs=1e-6)


@needs_nwchem
def test_a_failed_nwchem_run_raises_its_own_error(tmp_path):
    with pytest.raises(ReferenceFailed, match="failed opening basis file"):
        run_nwchem(qa_h2o(), tmp_path, method="HF", basis="no-such-basis")
    assert not (tmp_path / "nwchem.magres").exists()


# ------------------------------------------------------------------------------------------ no binary needed


def test_parser_reads_a_captured_nwchem_output():
    text = CAPTURED.read_text()
    sigma = nmrshielding.parse_nwchem_shielding(text, 3)
    assert isotropic(sigma) == pytest.approx([232.4557, 28.6669, 28.6669], abs=1e-4)
    # prop_h2o.out's H tensor in its frame (molecule turned into the xz plane, this H at −x): here the
    # molecule stays in the yz plane with this H at +y, so x↔y and the off-diagonal changes sign
    assert np.diag(sigma[1]) == pytest.approx([25.2478, 33.1802, 27.5727])
    assert sigma[1, 1, 2] == pytest.approx(0.2977) and sigma[1, 0, 1] == 0
    efg, positions = nmrshielding.parse_nwchem_efg(text, 3)
    assert np.allclose(positions, qa_h2o().positions, atol=1e-5)
    assert np.allclose(efg, np.swapaxes(efg, 1, 2))  # built symmetric from the six printed components
    assert np.diag(efg[0]) == pytest.approx([-2.715784, 2.522999, 0.192785])  # sign flipped to ∂²V
    assert cq_Hz(efg[0], "17O") == pytest.approx(qa_cq_Hz(), rel=1e-6)


def test_parsed_output_becomes_a_magres_file_in_the_structure_order(tmp_path):
    from ase.io import read

    atoms = qa_h2o()
    magres = nmrshielding.nwchem_magres(CAPTURED.read_text(), atoms, NMRShieldingSpec(code="nwchem"),
                                        tmp_path / "x.magres")
    res = nmrshielding.to_result(magres, atoms, "nwchem:test")
    assert isotropic(np.array(res.shielding_ppm)) == pytest.approx([232.4557, 28.6669, 28.6669], abs=1e-4)
    back = read(tmp_path / "x.magres", format="magres")
    assert not back.pbc.any() and back.get_chemical_symbols() == ["O", "H", "H"]
    assert "calc_code NWChem" in (tmp_path / "x.magres").read_text()


def test_tensors_of_another_frame_are_refused(tmp_path):
    moved = qa_h2o()
    moved.translate([0.1, 0, 0])
    with pytest.raises(ReferenceFailed, match="another frame"):
        nmrshielding.nwchem_magres(CAPTURED.read_text(), moved, NMRShieldingSpec(code="nwchem"), tmp_path / "x.magres")


def test_an_output_without_every_atom_is_an_error():
    text = CAPTURED.read_text()
    cut = text[:text.index("Atom:    3")]
    with pytest.raises(ReferenceFailed, match=r"no shielding for atoms \[3\]"):
        nmrshielding.parse_nwchem_shielding(cut, 3)


def test_input_keeps_the_frame_and_asks_for_shielding_and_efg(tmp_path):
    spec = NMRShieldingSpec(code="nwchem", charge=-1, multiplicity=2, method="PBE0", basis="pcS-2")
    text = nmrshielding.nwchem_input(spec, qa_h2o(), tmp_path)
    assert "geometry units angstrom nocenter noautosym noautoz" in text
    assert "task dft property" in text and "shielding" in text and "efieldgrad" in text
    assert "charge -1" in text and "mult 2" in text and "xc PBE0" in text and "library pcS-2" in text
    hf = nmrshielding.nwchem_input(NMRShieldingSpec(code="nwchem", method="HF", efg=False), qa_h2o(), tmp_path)
    assert "task scf property" in hf and "efieldgrad" not in hf


def test_a_periodic_structure_is_refused(tmp_path):
    crystal = qa_h2o()
    crystal.cell, crystal.pbc = [5, 5, 5], True
    with pytest.raises(ValueError, match="field 'code'.*periodic"):
        run_task(NMRShieldingSpec(code="nwchem"), [crystal], TaskContext(workdir=tmp_path))


def _fake_nwchem(tmp_path: Path, stdout: str, rc: int) -> str:
    script = tmp_path / "fake-nwchem"
    (tmp_path / "stdout.txt").write_text(stdout)
    script.write_text(f"#!/bin/sh\ncat {tmp_path / 'stdout.txt'}\nexit {rc}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_an_unconverged_scf_is_classified(tmp_path):
    exe = _fake_nwchem(tmp_path, "   convergence    iter        energy\n      Calculation failed to converge\n", 43)
    with pytest.raises(SCFNotConverged):
        run_task(NMRShieldingSpec(code="nwchem", executable=exe), [qa_h2o()], TaskContext(workdir=tmp_path / "w"))


def test_nwchem_error_message_is_reported(tmp_path):
    rule = " " + "-" * 72
    out = f"{rule}\n bas_tag_lib: failed opening basis file                   0\n{rule}\n"
    exe = _fake_nwchem(tmp_path, out, 255)
    with pytest.raises(ReferenceFailed, match="bas_tag_lib: failed opening basis file"):
        run_task(NMRShieldingSpec(code="nwchem", executable=exe), [qa_h2o()], TaskContext(workdir=tmp_path / "w"))


def test_a_missing_nwchem_is_a_setup_error(tmp_path):
    with pytest.raises(ReferenceSetupError, match="not found on PATH"):
        run_task(NMRShieldingSpec(code="nwchem", executable="no-such-nwchem"), [qa_h2o()],
                 TaskContext(workdir=tmp_path))
