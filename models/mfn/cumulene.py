"""Cumulene chains H2C(=C)n−2=CH2 and the guaranteed non-local (GNL) dataset (thesis §6.7, Fig. 6.8).

Labels are GFN2-xTB (tblite): the thesis's ωB97X-D3/def2-TZVP labels are not reproducible here, but
xTB shows the same non-locality (parity alternation of the energy per carbon, dihedral dependence at
fixed bond lengths far beyond any 2-layer, 3 Å receptive field).
"""
from __future__ import annotations

import numpy as np
from ase import Atoms

# Internal coordinates of thesis Fig. 6.8 (geometry-optimised n_C = 30 cumulene).
R_CH_A = 1.086
R_CC_TERMINAL_A = 1.315  # r_CC^(1): the two C=C bonds at the chain ends
R_CC_INNER_A = 1.279  # r_CC^(>1)
THETA_HCH_DEG = 118.71

# GNL splits (thesis §6.7.2): train/validation lengths, out-of-domain lengths.
TRAIN_LENGTHS = (3, 4, 5, 6, 7, 8, 9, 10, 13, 14)
OUT_11_12 = (11, 12)
OUT_15_16 = (15, 16)


def cumulene(n_carbon: int, dihedral_deg: float = 0.0) -> Atoms:
    """Linear cumulene along z with n_carbon C atoms; the far CH2 plane is rotated by dihedral_deg."""
    if n_carbon < 2:
        raise ValueError(f"n_carbon must be >= 2, got {n_carbon}")
    z = [0.0]
    for k in range(1, n_carbon):
        terminal = k == 1 or k == n_carbon - 1
        z.append(z[-1] + (R_CC_TERMINAL_A if terminal else R_CC_INNER_A))
    carbons = [(0.0, 0.0, zz) for zz in z]
    half = np.radians(THETA_HCH_DEG) / 2
    phi = np.radians(dihedral_deg)
    hydrogens = []
    for end, sign, angle in ((z[0], -1.0, 0.0), (z[-1], 1.0, phi)):
        u = np.array([np.cos(angle), np.sin(angle), 0.0])
        for s in (1.0, -1.0):
            hydrogens.append(np.array([0.0, 0.0, end]) + R_CH_A * (s * np.sin(half) * u + sign * np.cos(half) * np.array([0, 0, 1.0])))
    return Atoms("C" * n_carbon + "H4", positions=np.vstack([carbons, hydrogens]))


def set_dihedral(atoms: Atoms, dihedral_deg: float) -> Atoms:
    """Rotate the far CH2 group (last two H and their carbon's frame) about the chain axis to dihedral_deg.

    Works for relaxed chains: the axis is the first→last carbon vector; the current dihedral is measured
    from the H–H vectors of the two ends.
    """
    a = atoms.copy()
    n_c = int((a.numbers == 6).sum())
    pos = a.positions
    axis = pos[n_c - 1] - pos[0]
    axis /= np.linalg.norm(axis)
    h1 = pos[n_c] - pos[n_c + 1]
    h2 = pos[n_c + 2] - pos[n_c + 3]
    h1 -= axis * (h1 @ axis)
    h2 -= axis * (h2 @ axis)
    current = np.degrees(np.arctan2(np.cross(h1, h2) @ axis, h1 @ h2))
    rotate = np.radians(dihedral_deg - current)
    c, s = np.cos(rotate), np.sin(rotate)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    R = np.eye(3) + s * K + (1 - c) * K @ K
    centre = pos[n_c - 1]
    for i in (n_c + 2, n_c + 3):
        pos[i] = centre + R @ (pos[i] - centre)
    a.positions = pos
    return a


def xtb_calculator(method: str = "GFN2-xTB"):
    from tblite.ase import TBLite

    return TBLite(method=method, verbosity=0)


def label(atoms: Atoms, calc=None) -> Atoms:
    """Attach REF_energy (eV) and REF_forces (eV/Å) from GFN2-xTB."""
    a = atoms.copy()
    a.calc = calc or xtb_calculator()
    energy = a.get_potential_energy()
    forces = a.get_forces()
    a.calc = None
    a.info["REF_energy"] = float(energy)
    a.arrays["REF_forces"] = np.array(forces)
    return a


def relaxed(n_carbon: int, fmax_eV_per_A: float = 0.02, calc=None) -> Atoms:
    """xTB-relaxed planar cumulene (the thesis relaxes the GNL starting geometries)."""
    from ase.optimize import BFGS

    a = cumulene(n_carbon, 0.0)
    a.calc = calc or xtb_calculator()
    BFGS(a, logfile=None).run(fmax=fmax_eV_per_A, steps=200)
    a.calc = None
    return a


def length_scan(lengths=range(3, 31), dihedral_deg: float = 5.0) -> list[Atoms]:
    """Fig. 6.7 left: energy vs chain length at fixed ϕ, Fig. 6.8 geometry."""
    calc = xtb_calculator()
    return [label(cumulene(n, dihedral_deg), calc) for n in lengths]


def angle_scan(n_carbon: int = 12, angles_deg=np.arange(0.0, 90.0 + 1e-9, 3.0)) -> list[Atoms]:
    """Fig. 6.7 right: energy vs dihedral 0–90° in 3° steps at n_C = 12."""
    calc = xtb_calculator()
    out = []
    for phi in angles_deg:
        a = label(cumulene(n_carbon, float(phi)), calc)
        a.info["dihedral_deg"] = float(phi)
        out.append(a)
    return out


def gnl_dataset(
    n_train: int = 10,
    n_valid: int = 3,
    n_test_in: int = 2,
    n_test_out: int = 10,
    rattle_A: float = 0.01,
    step_deg: float = 6.0,
    relax: bool = True,
    lengths_train=TRAIN_LENGTHS,
    lengths_out=OUT_11_12 + OUT_15_16,
    seed: int = 0,
) -> dict[str, list[Atoms]]:
    """The guaranteed non-local splits: {'train', 'valid', 'in_domain', 'out_11_12', 'out_15_16'}.

    Per length: dihedrals on an equally spaced 6° scan from a random start, then Gaussian rattle of
    σ = rattle_A on every coordinate (thesis §6.7.3).
    """
    rng = np.random.default_rng(seed)
    calc = xtb_calculator()
    splits: dict[str, list[Atoms]] = {k: [] for k in ("train", "valid", "in_domain", "out_11_12", "out_15_16")}

    bases: dict[int, Atoms] = {}

    def samples(n_c: int, count: int, split: str):
        if n_c not in bases:
            bases[n_c] = relaxed(n_c, calc=calc) if relax else cumulene(n_c)
        base = bases[n_c]
        start = rng.uniform(0.0, 180.0)
        for k in range(count):
            phi = (start + step_deg * k) % 180.0
            a = set_dihedral(base, phi)
            a.positions += rng.normal(0.0, rattle_A, size=a.positions.shape)
            a = label(a, calc)
            a.info.update(n_carbon=n_c, dihedral_deg=float(phi), split=split)
            splits[split].append(a)

    for n_c in lengths_train:
        samples(n_c, n_train, "train")
        samples(n_c, n_valid, "valid")
        samples(n_c, n_test_in, "in_domain")
    for n_c in lengths_out:
        samples(n_c, n_test_out, "out_11_12" if n_c in OUT_11_12 else "out_15_16")
    return splits
