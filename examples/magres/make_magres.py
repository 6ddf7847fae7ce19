"""Rebuild the .magres files of examples/nmr_precomputed.yaml with the nmrshielding task's NWChem backend.

    OMP_NUM_THREADS=1 python examples/magres/make_magres.py      # 5–10 min on one core

The bicarbonate anion HCO3⁻ (the thesis's species, §5.4.1, here bare): B3LYP/pcS-1 GIAO shieldings and
EFGs (charge −1). minimum0 is the GFN2-xTB minimum (tblite) with the O–H syn to O2; minimum1 is the
equivalent minimum with the O–H turned by 180° about C–O1, syn to O3: minimum0 mirrored through the plane
that holds C–O1 and the plane normal, O2 and O3 relabelled, so both minima have the same energy
(populations 0.5/0.5) and their tensors differ by that mirror only. The MD samples are GFN2-xTB Langevin
MD at 300 K from each minimum (100 fs to thermalise, then one sample every 100 fs). The bare anion's
O–H turns over within a few hundred fs with GFN2-xTB, where in the thesis's MOF the 0.49 eV barrier makes
it rare: the O_syn–C–O1–H torsion is held at its minimum value (FixInternals) so that each run stays in its
minimum, as the example's rate says the jump is slow; the other modes move freely. Also prints σ_iso(17O)
of H2O by the same method, from which the example's sigma_ref_ppm is set (see the README).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.optimize import BFGS

from reactforge.schemas.tasks import NMRShieldingSpec
from reactforge.tasks import run_task
from reactforge.tasks.context import TaskContext
from reactforge.tasks.nmr.tensors import isotropic

HERE = Path(__file__).parent
SPEC = NMRShieldingSpec(code="nwchem", method="B3LYP", basis="pcS-1", charge=-1)
N_SAMPLES, STEPS_PER_SAMPLE, TIMESTEP_FS, T_K = 3, 200, 0.5, 300.0
C, O1, O2, O3, H = range(5)


def xtb(atoms: Atoms) -> Atoms:
    from tblite.ase import TBLite

    atoms.calc = TBLite(method="GFN2-xTB", charge=-1, verbosity=0)
    return atoms


def minimum() -> Atoms:
    start = Atoms("CO3H", positions=[[0, 0, 0], [1.36, 0, 0], [-0.62, 1.13, 0], [-0.62, -1.13, 0], [1.62, 0.93, 0]])
    BFGS(xtb(start), logfile=None).run(fmax=0.002, steps=500)
    return start


def mirrored(m0: Atoms) -> Atoms:
    """m0 reflected through the plane holding C–O1 and the molecular plane's normal, O2 and O3 swapped."""
    normal = np.cross(m0.positions[O2] - m0.positions[C], m0.positions[O3] - m0.positions[C])
    n = np.cross(m0.positions[O1] - m0.positions[C], normal)
    n /= np.linalg.norm(n)
    d = (m0.positions - m0.positions[C]) @ n
    m1 = Atoms(m0.get_chemical_symbols(), positions=m0.positions - 2 * d[:, None] * n)
    m1.positions[[O2, O3]] = m1.positions[[O3, O2]]
    return m1


def md_samples(m: Atoms, seed: int) -> list[Atoms]:
    from ase.constraints import FixInternals

    atoms = xtb(m.copy())
    syn, anti = (O2, O3) if m.get_distance(H, O2) < m.get_distance(H, O3) else (O3, O2)
    torsion = [syn, C, O1, H]
    atoms.set_constraint(FixInternals(dihedrals_deg=[[atoms.get_dihedral(*torsion), torsion]]))
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=T_K, rng=rng)
    dyn = Langevin(atoms, TIMESTEP_FS * units.fs, temperature_K=T_K, friction=0.02 / units.fs, rng=rng)
    dyn.run(STEPS_PER_SAMPLE)
    out = []
    for _ in range(N_SAMPLES):
        dyn.run(STEPS_PER_SAMPLE)
        out.append(Atoms(atoms.get_chemical_symbols(), positions=atoms.positions))
        assert atoms.get_distance(H, syn) < atoms.get_distance(H, anti), "the O–H turned over"
    return out


def shielding(atoms: Atoms, dest: Path | None, spec: NMRShieldingSpec = SPEC) -> np.ndarray:
    with tempfile.TemporaryDirectory() as work:
        res = run_task(spec, [atoms], TaskContext(workdir=Path(work)))
        if dest is not None:
            shutil.copy(Path(work) / "nwchem.magres", dest)
    return isotropic(np.array(res.shielding_ppm))


def main() -> None:
    m0 = minimum()
    for k, m in enumerate((m0, mirrored(m0))):
        print(f"minimum{k}: σ_iso(17O) = {shielding(m, HERE / f'minimum{k}.magres')[1:4].round(2)} ppm")
        for j, sample in enumerate(md_samples(m, seed=17 + k)):
            name = f"minimum{k}_md{j:03d}.magres"
            print(f"  {name}: σ_iso(17O) = {shielding(sample, HERE / name)[1:4].round(2)} ppm")
    r, half = 0.9572, np.radians(104.52) / 2
    water = Atoms("OH2", positions=[[0, 0, 0], [0, r * np.sin(half), r * np.cos(half)],
                                    [0, -r * np.sin(half), r * np.cos(half)]])
    sigma = shielding(water, None, SPEC.model_copy(update={"charge": 0}))[0]
    print(f"H2O (r_e geometry): σ_iso(17O) = {sigma:.2f} ppm")


if __name__ == "__main__":
    main()
