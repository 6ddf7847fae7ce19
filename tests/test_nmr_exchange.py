"""Jump (stochastic Liouville) model: analytic two-site limits and detailed balance."""
import numpy as np
import pytest

from reactforge.tasks.nmr import exchange


def gutowsky_holm(nu, nu_a, nu_b, k):
    """Gutowsky–Holm two-site, equal populations, no T2: g ∝ τ(ν_A−ν_B)² / {[ν̄−ν]² + 4π²τ²(ν_A−ν)²(ν_B−ν)²},
    τ = 1/(2k) with k the rate of each jump."""
    tau = 1.0 / (2.0 * k)
    return tau * (nu_a - nu_b) ** 2 / ((0.5 * (nu_a + nu_b) - nu) ** 2
                                       + 4 * np.pi**2 * tau**2 * (nu_a - nu) ** 2 * (nu_b - nu) ** 2)


DNU = 1000.0  # Hz between the two sites
AXIS = np.linspace(-3000, 3000, 6001)


def two_site(k, fwhm=1e-3):
    K = exchange.rate_matrix(2, {(0, 1): k, (1, 0): k})
    return exchange.lineshape([-DNU / 2, DNU / 2], K, [0.5, 0.5], AXIS, fwhm)


# slow, coalescence, the exceptional point of the 2×2 exchange matrix (defective: solved per frequency), fast
@pytest.mark.parametrize("k", [50.0, np.pi * DNU / np.sqrt(2), np.pi * DNU, 2e4])
def test_two_site_matches_gutowsky_holm(k):
    ours = two_site(k)
    ref = gutowsky_holm(AXIS, -DNU / 2, DNU / 2, k)
    ref *= ours.max() / ref.max()
    assert np.abs(ours - ref).max() < 1e-4 * ours.max()
    # normalised to unit area (most of it inside the window)
    assert 0.9 < np.trapezoid(ours, AXIS) < 1.0001


def test_coalescence_rate_gives_flat_top():
    kc = np.pi * DNU / np.sqrt(2)
    centre = len(AXIS) // 2

    def curvature(k):
        s = two_site(k)
        return (s[centre + 1] - 2 * s[centre] + s[centre - 1]) / s[centre]

    assert curvature(0.9 * kc) > 0  # dip between two peaks
    assert curvature(1.1 * kc) < 0  # single maximum
    assert abs(curvature(kc)) < 1e-6


def test_slow_and_fast_limits():
    slow = two_site(1e-3, fwhm=20.0)
    peaks = AXIS[np.argsort(slow)[-2:]]
    assert sorted(np.round(peaks)) == [-500, 500]
    fast = two_site(1e9, fwhm=20.0)
    assert AXIS[np.argmax(fast)] == 0.0
    lor = (10.0 / np.pi) / (AXIS**2 + 10.0**2)  # FWHM 20 Hz at the mean
    assert np.abs(fast - lor).max() < 1e-3 * lor.max()


def test_unequal_populations_fast_limit_is_weighted_mean():
    p = np.array([0.8, 0.2])
    K = exchange.detailed_balance_rate_matrix(p, {(0, 1): 1e8})
    s = exchange.lineshape([-500.0, 500.0], K, p, AXIS, 20.0)
    assert AXIS[np.argmax(s)] == pytest.approx(0.8 * -500 + 0.2 * 500, abs=1.0)


def test_detailed_balance_of_K():
    rng = np.random.default_rng(3)
    p = rng.random(6) + 0.1
    p /= p.sum()
    forward = {(i, j): float(rng.random() * 1e5) for i in range(6) for j in range(i + 1, 6)}
    K = exchange.detailed_balance_rate_matrix(p, forward)
    assert np.allclose(K.sum(axis=0), 0.0, atol=1e-8)
    assert exchange.detailed_balance_violation(K, p) < 1e-12
    assert np.allclose(exchange.equilibrium_populations(K), p)
    assert np.allclose(K @ p, 0.0, atol=1e-8)
    # a cyclic chain without reverse jumps is not reversible
    cyc = exchange.rate_matrix(3, {(0, 1): 1.0, (1, 2): 1.0, (2, 0): 1.0})
    assert exchange.detailed_balance_violation(cyc, np.ones(3) / 3) > 0.5


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="negative"):
        exchange.rate_matrix(2, {(0, 1): -1.0})
    with pytest.raises(ValueError, match="one direction"):
        exchange.detailed_balance_rate_matrix([0.5, 0.5], {(0, 1): 1.0, (1, 0): 1.0})
    with pytest.raises(ValueError, match="columns of K"):
        exchange.lineshape([0.0, 1.0], np.array([[0, 1.0], [0, 0]]), [0.5, 0.5], AXIS)
    with pytest.raises(ValueError, match="fwhm"):
        exchange.lineshape([0.0, 1.0], np.zeros((2, 2)), [0.5, 0.5], AXIS, 0.0)
