"""Cumulene geometry (thesis Fig. 6.8) and the non-locality of the GFN2-xTB labels (thesis Fig. 6.7)."""
from __future__ import annotations

import numpy as np
import pytest

from reactforge.models.mfn.cumulene import (
    OUT_11_12,
    OUT_15_16,
    R_CC_INNER_A,
    R_CC_TERMINAL_A,
    R_CH_A,
    THETA_HCH_DEG,
    TRAIN_LENGTHS,
    cumulene,
    gnl_dataset,
    label,
    length_scan,
    set_dihedral,
    xtb_calculator,
)


def dihedral(a) -> float:
    n_c = int((a.numbers == 6).sum())
    h1 = a.positions[n_c] - a.positions[n_c + 1]
    h2 = a.positions[n_c + 2] - a.positions[n_c + 3]
    axis = a.positions[n_c - 1] - a.positions[0]
    axis /= np.linalg.norm(axis)
    h1 -= axis * (h1 @ axis)
    h2 -= axis * (h2 @ axis)
    return float(np.degrees(np.arctan2(np.cross(h1, h2) @ axis, h1 @ h2)))


def test_geometry_follows_fig_6_8():
    a = cumulene(6, 37.0)
    d = a.get_all_distances()
    assert d[0, 1] == pytest.approx(R_CC_TERMINAL_A) and d[4, 5] == pytest.approx(R_CC_TERMINAL_A)
    assert d[1, 2] == pytest.approx(R_CC_INNER_A) and d[2, 3] == pytest.approx(R_CC_INNER_A)
    assert d[0, 6] == pytest.approx(R_CH_A) and d[5, 9] == pytest.approx(R_CH_A)
    assert a.get_angle(6, 0, 7) == pytest.approx(THETA_HCH_DEG)
    assert dihedral(a) == pytest.approx(37.0)
    b = set_dihedral(cumulene(6, 0.0), 37.0)
    assert np.allclose(b.positions, a.positions, atol=1e-12)
    with pytest.raises(ValueError, match="n_carbon"):
        cumulene(1)


def test_xtb_energy_per_carbon_alternates_with_parity():
    """GFN2-xTB reproduces the non-local length trend: the energy added per carbon alternates
    between about −58.1 (odd → even n_C) and −56.9 eV up to n_C = 16."""
    energies = np.array([a.info["REF_energy"] for a in length_scan(range(10, 17), 5.0)])
    added = np.diff(energies)  # E(n+1) − E(n), n = 10..15
    to_even, to_odd = added[1::2], added[0::2]  # n+1 = 12, 14, 16 and 11, 13, 15
    assert np.all(np.abs(to_even - -58.1) < 0.2), to_even
    assert np.all(np.abs(to_odd - -56.9) < 0.2), to_odd


def test_xtb_dihedral_rise_at_twelve_carbons():
    """At n_C = 12 (14 Å end to end) twisting the terminal CH2 from 0° to 90° costs ≈ 0.66 eV."""
    calc = xtb_calculator()
    e = [label(cumulene(12, phi), calc).info["REF_energy"] for phi in (0.0, 45.0, 90.0)]
    assert e[2] - e[0] == pytest.approx(0.66, abs=0.05)
    assert 0.0 < e[1] - e[0] < e[2] - e[0]


def test_gnl_splits_lengths_and_rattle():
    splits = gnl_dataset(
        n_train=2, n_valid=1, n_test_in=1, n_test_out=1, relax=False,
        lengths_train=(3, 4), lengths_out=(OUT_11_12[0], OUT_15_16[0]),
    )
    assert {k: len(v) for k, v in splits.items()} == {"train": 4, "valid": 2, "in_domain": 2, "out_11_12": 1, "out_15_16": 1}
    assert {a.info["n_carbon"] for a in splits["train"]} == {3, 4}
    assert splits["out_15_16"][0].info["n_carbon"] == 15
    for a in splits["train"]:
        ideal = set_dihedral(cumulene(a.info["n_carbon"]), a.info["dihedral_deg"])
        shift = a.positions - ideal.positions
        assert 0.001 < shift.std() < 0.03  # σ = 0.01 Å rattle
        assert a.arrays["REF_forces"].shape == (len(a), 3)
    phis = sorted(a.info["dihedral_deg"] for a in splits["train"] if a.info["n_carbon"] == 3)
    step = (phis[1] - phis[0]) % 180
    assert min(step, 180 - step) == pytest.approx(6.0)  # equally spaced 6° scan
    assert set(TRAIN_LENGTHS) == {3, 4, 5, 6, 7, 8, 9, 10, 13, 14}
