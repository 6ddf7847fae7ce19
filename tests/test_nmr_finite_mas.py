"""Exchange under MAS at finite spinning speed (rotor-period propagation, EXPRESS): the ν_rot → ∞ limit,
sidebands without exchange against mrsimulator, the exchange broadening of the centre band, Gutowsky–Holm
for isotropic sites, and the criterion that picks the infinite-speed model."""
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from reactforge.tasks.nmr import exchange, powder, rotor, spectra, tensors

ROOT = Path(__file__).resolve().parents[1]
NU0 = tensors.larmor_Hz("17O", 23.5)
R1, R2 = Rotation.random(random_state=1).as_matrix(), Rotation.random(random_state=2).as_matrix()
RY90 = Rotation.from_euler("y", 90, degrees=True).as_matrix()
DNU = 1000.0  # Hz between two isotropic sites
AXIS = np.linspace(-3000, 3000, 6001)


def shift_tensor(iso, zeta, eta, R=np.eye(3)):
    """δ tensor with Haeberlen principal values [xx, yy, zz] = iso + [−ζ(1+η)/2, −ζ(1−η)/2, ζ]."""
    return iso * np.eye(3) + R @ np.diag([-zeta * (1 + eta) / 2, -zeta * (1 - eta) / 2, zeta]) @ R.T


def efg_tensor(cq, eta, R=np.eye(3)):
    """Q tensor (Hz) with Q_zz = C_Q, η_Q = (Q_xx − Q_yy)/Q_zz."""
    return R @ np.diag([-cq * (1 - eta) / 2, -cq * (1 + eta) / 2, cq]) @ R.T


def gutowsky_holm(nu, nu_a, nu_b, k):
    """Two equally populated sites, each jump at rate k, no T2 (as in test_nmr_exchange)."""
    tau = 1.0 / (2.0 * k)
    return tau * (nu_a - nu_b) ** 2 / ((0.5 * (nu_a + nu_b) - nu) ** 2
                                       + 4 * np.pi**2 * tau**2 * (nu_a - nu) ** 2 * (nu_b - nu) ** 2)


def fwhm_at_centre(axis, s, centre=0.0):
    """Full width at half height of the peak at `centre` (linear interpolation of the crossings)."""
    c = np.argmin(np.abs(axis - centre))
    half = s[c] / 2.0
    right = c + np.argmax(s[c:] < half)
    left = c - np.argmax(s[c::-1] < half)
    x_r = np.interp(half, [s[right], s[right - 1]], [axis[right], axis[right - 1]])
    x_l = np.interp(half, [s[left], s[left + 1]], [axis[left], axis[left + 1]])
    return x_r - x_l


def two_site_csa(eta=0.5):
    """The issue's case: equal δ_iso, a 150 ppm CSA reoriented by 90° (unique axis onto the x axis)."""
    return np.array([shift_tensor(0.0, 150.0, eta), shift_tensor(0.0, 150.0, eta, RY90)])


def sym_K(k):
    return exchange.rate_matrix(2, {(0, 1): k, (1, 0): k})


def test_harmonics_give_the_static_frequency_and_the_infinite_speed_average():
    delta = np.array([shift_tensor(120, 200, 0.4, R1)])
    Q = np.array([efg_tensor(7e6, 0.3, R2)])
    dirs, _ = powder.zcw(50)
    coef = rotor.frequency_harmonics(dirs, NU0, delta, Q, 2.5)
    assert np.allclose(coef[:, 0].real, powder.site_freqs_Hz(dirs, NU0, delta, Q, 2.5, mas=True), atol=1e-6)
    # ν(φ) at an arbitrary phase from 9 harmonics equals the static frequency of that B0 direction
    u, v = powder._perpendicular_frame(dirs)
    c, s, phi = np.cos(powder.MAGIC_ANGLE_RAD), np.sin(powder.MAGIC_ANGLE_RAD), 1.234
    direct = powder.site_freqs_Hz(c * dirs + s * (np.cos(phi) * u + np.sin(phi) * v), NU0, delta, Q, 2.5, mas=False)
    assert np.allclose(rotor.frequency_on_phases(coef, np.array([phi]))[:, 0], direct, atol=1e-6)
    # step means over a fine grid approach the midpoint values
    steps = rotor.step_frequencies_Hz(coef, 512)
    mid = rotor.frequency_on_phases(coef, 2 * np.pi * (np.arange(512) + 0.5) / 512)
    assert np.abs(steps - mid).max() < 1e-4 * np.abs(mid).max()


def test_reduces_to_the_infinite_speed_model_as_the_rotor_speeds_up():
    p = np.array([0.6, 0.4])
    delta = np.array([shift_tensor(180, 80, 0.3, R1), shift_tensor(200, 60, 0.9, R2)])
    Q = np.array([efg_tensor(4e6, 0.5, R1), efg_tensor(3e6, 0.2, R2)])
    K = exchange.detailed_balance_rate_matrix(p, {(0, 1): 2e3})
    dirs, w = powder.zcw(144)
    coef = rotor.frequency_harmonics(dirs, NU0, delta, Q, 2.5)
    axis = np.linspace(170, 210, 801) * NU0 * 1e-6
    infinite = exchange.lineshape(coef[:, 0].real, K, p, axis, 200.0, w)
    fast = rotor.lineshape(coef, K, p, axis, 1e7, 200.0, w)
    assert np.abs(fast - infinite).max() < 2e-3 * infinite.max()
    slow = rotor.lineshape(coef, K, p, axis, 1e4, 200.0, w)
    assert np.abs(slow - infinite).max() > 0.05 * infinite.max()  # 10 kHz is not that limit


def test_criterion_boundary_keeps_the_infinite_speed_model_within_two_percent():
    p = np.array([0.5, 0.5])
    dirs, w = powder.zcw(233)
    coef = rotor.frequency_harmonics(dirs, NU0, 0.1 * two_site_csa(), None)  # ζ = 15 ppm: Δν ≈ 2 kHz
    aniso = rotor.anisotropic_excursion_Hz(coef)
    rate = rotor.FAST_PATH_FACTOR * aniso  # (a) at its limit
    k = rotor.MISSED_WIDTH_FRACTION * 300.0 / (aniso / rate) ** 2  # (c) at its limit, (b) holds
    assert k < rate / rotor.FAST_PATH_FACTOR
    assert rotor.infinite_speed_valid(coef, sym_K(k), rate, 300.0)
    assert not rotor.infinite_speed_valid(coef, sym_K(k), 0.95 * rate, 300.0)  # (a)
    assert not rotor.infinite_speed_valid(coef, sym_K(1.1 * k), rate, 300.0)  # (c)
    assert not rotor.infinite_speed_valid(coef, sym_K(1.1 * k), rate, 200.0)  # (c), a narrower line
    assert not rotor.infinite_speed_valid(0.01 * coef, sym_K(1.1 * rate / 10), rate, 300.0)  # (b)
    axis = np.linspace(-3000, 3000, 1201)
    finite = rotor.lineshape(coef, sym_K(k), p, axis, rate, 300.0, w)
    infinite = exchange.lineshape(coef[:, 0].real, sym_K(k), p, axis, 300.0, w)
    assert np.abs(finite - infinite).max() < 0.02 * infinite.max()
    # where the criterion fails the infinite-speed model is visibly off
    finite = rotor.lineshape(coef, sym_K(20 * k), p, axis, rate, 300.0, w)
    infinite = exchange.lineshape(coef[:, 0].real, sym_K(20 * k), p, axis, 300.0, w)
    assert np.abs(finite - infinite).max() > 0.05 * infinite.max()
    # isotropic sites: no rotor modulation, the infinite-speed model is exact at any rate and speed
    iso = rotor.frequency_harmonics(dirs, NU0, np.array([np.eye(3) * 10.0, np.eye(3) * 20.0]), None)
    assert rotor.infinite_speed_valid(iso, sym_K(1e6), 1e3, 300.0)


def test_the_thesis_20_kHz_case_is_on_the_finite_speed_path():
    delta = two_site_csa()[:, None]  # (n_states, n_nuclei, 3, 3)
    exp = spectra.Experiment(n_orientations=100)
    assert exp.spin_rate_Hz == 20_000.0
    assert spectra.mas_model(delta, None, sym_K(2.4e5), exp) == "finite-speed"
    fast = spectra.Experiment(n_orientations=100, spin_rate_Hz=np.inf)
    assert spectra.mas_model(delta, None, sym_K(2.4e5), fast) == "infinite-speed"


def test_nucleus_spectra_show_spinning_sidebands_at_20_kHz():
    delta = np.array([shift_tensor(100.0, 150.0, 0.5, R1)])[:, None]
    exp = spectra.Experiment(n_orientations=200, ppm_min=-200, ppm_max=400, n_points=2048, fwhm_Hz=300.0)
    s = spectra.nucleus_spectra(delta, None, np.zeros((1, 1)), [1.0], exp)[0]
    inf = spectra.nucleus_spectra(delta, None, np.zeros((1, 1)), [1.0],
                                  spectra.Experiment(**{**exp.__dict__, "spin_rate_Hz": np.inf}))[0]
    ppm = exp.axis_ppm
    sideband_ppm = 100.0 + 20e3 / NU0 * 1e6
    at = lambda spec, x: spec[np.argmin(np.abs(ppm - x))]  # noqa: E731
    assert at(s, sideband_ppm) > 0.03 * s.max() and at(inf, sideband_ppm) < 1e-3 * inf.max()
    assert np.trapezoid(s, ppm) == pytest.approx(1.0, abs=0.02)  # normalised per nucleus, sidebands included
    assert at(s, 100.0) < at(inf, 100.0)  # the sidebands take intensity from the centre band


# ---------------------------------------------------------------- mrsimulator: sidebands, no exchange
def mrsim_spinning(iso, zeta_sigma, eta, cq, eta_q, rotor_Hz, fwhm_Hz, sw=4e5, count=8192):
    pytest.importorskip("mrsimulator")
    from mrsimulator import Simulator, Site, SpinSystem
    from mrsimulator import signal_processor as sp
    from mrsimulator.method.lib import BlochDecayCTSpectrum
    from mrsimulator.spin_system.tensors import SymmetricTensor

    site = Site(isotope="17O", isotropic_chemical_shift=iso,
                shielding_symmetric=SymmetricTensor(zeta=zeta_sigma, eta=eta),
                quadrupolar=SymmetricTensor(Cq=cq, eta=eta_q) if cq else None)
    method = BlochDecayCTSpectrum(channels=["17O"], magnetic_flux_density=23.5, rotor_frequency=rotor_Hz,
                                  spectral_dimensions=[dict(count=count, spectral_width=sw,
                                                            reference_offset=iso * NU0 * 1e-6)])
    sim = Simulator(spin_systems=[SpinSystem(sites=[site])], methods=[method])
    sim.config.integration_density = 120
    sim.config.number_of_sidebands = 64
    sim.run()
    proc = sp.SignalProcessor(operations=[sp.IFFT(), sp.apodization.Exponential(FWHM=f"{fwhm_Hz} Hz"), sp.FFT()])
    ds = proc.apply_operations(dataset=sim.methods[0].simulation)
    return np.asarray(ds.x[0].coordinates.value) * NU0 * 1e-6, np.real(ds.y[0].components[0])


def sideband_intensities(axis_Hz, s, centre_Hz, rotor_Hz, orders=range(-4, 5)):
    out = []
    for m in orders:
        sel = np.abs(axis_Hz - centre_Hz - m * rotor_Hz) < rotor_Hz / 2
        out.append(np.trapezoid(s[sel], axis_Hz[sel]))
    out = np.abs(out)
    return out / out.sum()


@pytest.mark.parametrize("iso, zeta, eta, cq, eta_q, rotor_Hz", [
    (100.0, 150.0, 0.5, 0.0, 0.0, 2e4),  # the CSA of the issue's case: sidebands up to ±3
    (100.0, -150.0, 0.5, 0.0, 0.0, 2e4),  # the opposite sign mirrors the pattern
    (200.0, 100.0, 0.2, 6e6, 0.3, 1e4),  # CSA + second-order CT, rank-2 and rank-4 spinning terms
])
def test_no_exchange_sidebands_match_mrsimulator(iso, zeta, eta, cq, eta_q, rotor_Hz):
    hz, ref = mrsim_spinning(iso, -zeta, eta, cq, eta_q, rotor_Hz, 200.0)  # mrsimulator's ζ is of σ = −δ
    order = np.argsort(hz)
    hz, ref = hz[order], ref[order]
    dirs, w = powder.zcw(987)
    delta = shift_tensor(iso, zeta, eta)[None]
    Q = np.diag([-cq * (1 + eta_q) / 2, -cq * (1 - eta_q) / 2, cq])[None] if cq else None  # frames coincide
    ours = rotor.lineshape(rotor.frequency_harmonics(dirs, NU0, delta, Q, 2.5), np.zeros((1, 1)), [1.0], hz,
                           rotor_Hz, 200.0, w)
    assert spectra.overlap(ours, ref) > 0.999
    mine = sideband_intensities(hz, ours, iso * NU0 * 1e-6, rotor_Hz)
    theirs = sideband_intensities(hz, ref, iso * NU0 * 1e-6, rotor_Hz)
    assert np.abs(mine - theirs).max() < 2e-3
    assert mine[3] + mine[5] > 0.1  # first-order sidebands carry > 10 %: the comparison is not trivial


# ---------------------------------------------------------------- exchange at finite speed
@pytest.mark.parametrize("k, issue_fwhm", [(2.4e5, 1865.0), (2.4e3, 474.0)])
def test_exchange_broadens_the_centre_band_as_in_the_issue(k, issue_fwhm):
    """Two sites, equal δ_iso, ζ = 150 ppm, η = 0.5 reoriented by 90°, 17O at 23.5 T, 20 kHz MAS, 300 Hz:
    the infinite-speed model gives 300 Hz whatever k; the jumps interrupt the rotor's refocusing."""
    p = np.array([0.5, 0.5])
    dirs, w = powder.zcw(377)
    coef = rotor.frequency_harmonics(dirs, NU0, two_site_csa(), None)
    axis = np.linspace(-6000, 6000, 1201)
    finite = rotor.lineshape(coef, sym_K(k), p, axis, 2e4, 300.0, w)
    infinite = exchange.lineshape(coef[:, 0].real, sym_K(k), p, axis, 300.0, w)
    assert fwhm_at_centre(axis, infinite) == pytest.approx(300.0, rel=1e-3)
    assert fwhm_at_centre(axis, finite) == pytest.approx(issue_fwhm, rel=0.05)


def test_benchmark_file_holds_the_issue_cases():
    path = ROOT / "benchmarks" / "results" / "nmr_finite_mas.json"
    if not path.exists():
        pytest.skip("run benchmarks/nmr_finite_mas.py")
    cases = json.loads(path.read_text())["cases"]
    got = {(c["k_per_s"], c["spin_rate_Hz"]): c["centreband_fwhm_Hz"] for c in cases}
    assert got[(2.4e5, 2e4)] == pytest.approx(1865.0, rel=0.05)
    assert got[(2.4e3, 2e4)] == pytest.approx(474.0, rel=0.05)


@pytest.mark.parametrize("k", [50.0, np.pi * DNU / np.sqrt(2), np.pi * DNU, 2e4])
def test_gutowsky_holm_for_isotropic_sites_at_finite_speed(k):
    ppm = DNU / NU0 * 1e6
    delta = np.array([-ppm / 2 * np.eye(3), ppm / 2 * np.eye(3)])
    dirs, w = powder.zcw(13)
    coef = rotor.frequency_harmonics(dirs, NU0, delta, None)
    ours = rotor.lineshape(coef, sym_K(k), [0.5, 0.5], AXIS, 2e4, 1e-3, w)
    ref = gutowsky_holm(AXIS, -DNU / 2, DNU / 2, k)
    ref *= ours.max() / ref.max()
    assert np.abs(ours - ref).max() < 1e-4 * ours.max()


def test_resolvent_of_near_defective_orientations_matches_the_line_sum():
    """Orientations whose period propagator has ill-conditioned eigenvectors are summed from the
    discrete-time resolvent; forcing it on every orientation must give the same spectrum."""
    dirs, w = powder.zcw(21)
    coef = rotor.frequency_harmonics(dirs, NU0, two_site_csa(), None)
    axis = np.linspace(-45e3, 45e3, 901)
    lines = rotor.lineshape(coef, sym_K(2.4e4), [0.5, 0.5], axis, 2e4, 300.0, w)
    resolvent = rotor.lineshape(coef, sym_K(2.4e4), [0.5, 0.5], axis, 2e4, 300.0, w, cond_max=0.0)
    assert np.abs(lines - resolvent).max() < 2e-3 * lines.max()


def test_hemisphere_is_enough_under_detailed_balance_and_mirrored_otherwise():
    dirs, w = powder.zcw(34)
    delta = np.array([shift_tensor(0, 150, 0.5, R1), shift_tensor(30, 100, 0.2, R2), shift_tensor(10, 120, 0.7)])
    coef = rotor.frequency_harmonics(dirs, NU0, delta, None)
    both = rotor.frequency_harmonics(np.concatenate([dirs, -dirs]), NU0, delta, None)
    axis = np.linspace(-30e3, 30e3, 601)
    p = np.ones(3) / 3
    cyclic = exchange.rate_matrix(3, {(0, 1): 5e3, (1, 2): 5e3, (2, 0): 5e3})  # no detailed balance
    full = rotor.lineshape(both, cyclic, p, axis, 2e4, 300.0, mirror=False)
    assert np.abs(rotor.lineshape(coef, cyclic, p, axis, 2e4, 300.0) - full).max() < 1e-9 * full.max()
    half = rotor.lineshape(coef, cyclic, p, axis, 2e4, 300.0, mirror=False)
    assert np.abs(half - full).max() > 1e-4 * full.max()  # the mirror is needed here
    reversible = exchange.detailed_balance_rate_matrix(p, {(0, 1): 5e3, (1, 2): 5e3})
    a = rotor.lineshape(coef, reversible, p, axis, 2e4, 300.0, mirror=False)
    b = rotor.lineshape(both, reversible, p, axis, 2e4, 300.0, mirror=False)
    assert np.abs(a - b).max() < 1e-6 * b.max()


def test_converged_in_the_number_of_steps():
    dirs, w = powder.zcw(55)
    coef = rotor.frequency_harmonics(dirs, NU0, two_site_csa(), None)
    axis = np.linspace(-45e3, 45e3, 901)
    auto = rotor.lineshape(coef, sym_K(2.4e5), [0.5, 0.5], axis, 2e4, 300.0, w)
    fine = rotor.lineshape(coef, sym_K(2.4e5), [0.5, 0.5], axis, 2e4, 300.0, w, n_steps=512)
    assert np.abs(auto - fine).max() < 5e-3 * fine.max()


def test_very_fast_jumps_spin_the_averaged_tensor():
    """k ≫ every frequency: the sites' mean tensor spins alone (its sidebands), area kept although the
    jump modes decay to nothing within a step."""
    p = np.array([0.7, 0.3])
    delta = np.array([shift_tensor(100, 150, 0.5, R1), shift_tensor(140, 150, 0.5, R1 @ RY90)])
    dirs, w = powder.zcw(89)
    axis = np.linspace(-60e3, 100e3, 1601) + 100 * NU0 * 1e-6
    jumps = rotor.lineshape(rotor.frequency_harmonics(dirs, NU0, delta, None),
                            exchange.detailed_balance_rate_matrix(p, {(0, 1): 1e10}), p, axis, 2e4, 300.0, w)
    mean = rotor.lineshape(rotor.frequency_harmonics(dirs, NU0, np.tensordot(p, delta, 1)[None], None),
                           np.zeros((1, 1)), [1.0], axis, 2e4, 300.0, w)
    assert np.abs(jumps - mean).max() < 1e-3 * mean.max()
    assert np.trapezoid(jumps, axis) == pytest.approx(np.trapezoid(mean, axis), rel=1e-3)
