"""Powder frequencies: static CSA edges, second-order CT against exact diagonalisation, and the k → 0 /
k → ∞ limits of the jump model against mrsimulator (an independent simulator)."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from reactforge.tasks.nmr import exchange, powder, tensors

NU0 = tensors.larmor_Hz("17O", 23.5)


def shift_tensor(iso, zeta, eta, R=np.eye(3)):
    """δ tensor with Haeberlen principal values [xx, yy, zz] = iso + [−ζ(1+η)/2, −ζ(1−η)/2, ζ]."""
    return iso * np.eye(3) + R @ np.diag([-zeta * (1 + eta) / 2, -zeta * (1 - eta) / 2, zeta]) @ R.T


def efg_tensor(cq, eta, R=np.eye(3)):
    """Q tensor (Hz) with Q_zz = C_Q, η_Q = (Q_xx − Q_yy)/Q_zz."""
    return R @ np.diag([-cq * (1 - eta) / 2, -cq * (1 + eta) / 2, cq]) @ R.T


def test_orientation_sets_integrate_second_moments():
    for dirs, w in (powder.zcw(500), powder.lebedev(17)):
        assert np.isclose(w.sum(), 1.0)
        second = np.einsum("o,oa,ob->ab", w, dirs, dirs)
        assert np.allclose(second, np.eye(3) / 3, atol=2e-3)
    with pytest.raises(ValueError, match="scheme"):
        powder.orientations("random", 10)


def test_static_axial_csa_horn_and_edge_at_principal_values():
    # δ_⊥ = 50 ppm (twice degenerate, the horn), δ_∥ = 200 ppm (the step edge)
    d = shift_tensor(100.0, 100.0, 0.0, Rotation.random(random_state=4).as_matrix())[None]
    dirs, w = powder.zcw(8000)
    f = powder.site_freqs_Hz(dirs, NU0, delta_ppm=d, mas=False)
    ppm = np.linspace(0, 250, 2501)
    s = exchange.lineshape(f, np.zeros((1, 1)), [1.0], ppm * NU0 * 1e-6, 1.0 * NU0 * 1e-6, w)
    assert ppm[np.argmax(s)] == pytest.approx(50.0, abs=0.5)
    edge = ppm[ppm > 100][np.argmin(np.gradient(s)[ppm > 100])]  # steepest drop beyond the horn
    assert edge == pytest.approx(200.0, abs=0.5)
    assert s[ppm < 45].max() < 0.05 * s.max() and s[ppm > 205].max() < 0.05 * s.max()


def test_mas_averages_csa_to_isotropic():
    d = shift_tensor(120.0, 300.0, 0.6, Rotation.random(random_state=5).as_matrix())[None]
    dirs, _ = powder.zcw(300)
    f = powder.site_freqs_Hz(dirs, NU0, delta_ppm=d, mas=True)
    assert np.allclose(f, 120.0 * NU0 * 1e-6, atol=1e-6)


def test_second_order_ct_matches_exact_diagonalisation():
    I = 2.5
    m = np.arange(I, -I - 1, -1)
    Ip = np.diag(np.sqrt(I * (I + 1) - m[1:] * (m[1:] + 1)), 1)
    Ix, Iy, Iz = (Ip + Ip.T) / 2, (Ip - Ip.T) / 2j, np.diag(m)
    Q = efg_tensor(8e6, 0.4, Rotation.random(random_state=6).as_matrix())
    HQ = sum(Q[a, b] * [Ix, Iy, Iz][a] @ [Ix, Iy, Iz][b] for a in range(3) for b in range(3)) / (2 * I * (2 * I - 1))
    E, V = np.linalg.eigh(-NU0 * Iz + HQ)
    up, down = (np.argmax(np.abs(V[list(m).index(mm)])) for mm in (0.5, -0.5))
    exact = E[down] - E[up] - NU0
    ours = powder.ct_second_order_Hz(Q[None], np.array([[0, 0, 1.0]]), NU0, I)[0, 0]
    assert ours == pytest.approx(exact, rel=1e-3)


def test_isotropic_second_order_shift():
    cq, eta = 7e6, 0.3
    dirs, w = powder.lebedev(41)
    f = powder.ct_second_order_Hz(efg_tensor(cq, eta)[None], dirs, NU0, 2.5)
    textbook = -(3 / 40) * cq**2 / NU0 * (2.5 * 3.5 - 0.75) / (2.5**2 * 16) * (1 + eta**2 / 3)
    assert w @ f[:, 0] == pytest.approx(textbook, rel=1e-6)


# ---------------------------------------------------------------- mrsimulator as the reference
mrsim = pytest.importorskip("mrsimulator")


def mrsim_spectrum(sites, rotor_Hz, fwhm_Hz, count=4096, sw=6e4, offset=1.5e4):
    from mrsimulator import Simulator, Site, SpinSystem
    from mrsimulator import signal_processor as sp
    from mrsimulator.method.lib import BlochDecayCTSpectrum
    from mrsimulator.spin_system.tensors import SymmetricTensor

    systems = []
    for iso, zeta, eta, cq, eta_q, pop in sites:
        site = Site(isotope="17O", isotropic_chemical_shift=iso,
                    shielding_symmetric=SymmetricTensor(zeta=zeta, eta=eta) if zeta else None,
                    quadrupolar=SymmetricTensor(Cq=cq, eta=eta_q) if cq else None)
        systems.append(SpinSystem(sites=[site], abundance=pop))
    method = BlochDecayCTSpectrum(channels=["17O"], magnetic_flux_density=23.5, rotor_frequency=rotor_Hz,
                                  spectral_dimensions=[dict(count=count, spectral_width=sw, reference_offset=offset)])
    sim = Simulator(spin_systems=systems, methods=[method])
    sim.config.integration_density = 120
    sim.config.number_of_sidebands = 1
    sim.run()
    proc = sp.SignalProcessor(operations=[sp.IFFT(), sp.apodization.Exponential(FWHM=f"{fwhm_Hz} Hz"), sp.FFT()])
    ds = proc.apply_operations(dataset=sim.methods[0].simulation)
    return np.asarray(ds.x[0].coordinates.value), np.real(ds.y[0].components[0])


def ours(delta, Q, K, p, ppm, fwhm, mas, n=3000):
    dirs, w = powder.zcw(n)
    f = powder.site_freqs_Hz(dirs, NU0, delta_ppm=delta, Q_Hz=Q, mas=mas)
    return exchange.lineshape(f, K, p, ppm * NU0 * 1e-6, fwhm, w)


def overlap(a, b):
    return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


R1, R2 = Rotation.random(random_state=1).as_matrix(), Rotation.random(random_state=2).as_matrix()


@pytest.mark.parametrize("mas", [True, False])
def test_slow_exchange_limit_matches_mrsimulator_separate_sites(mas):
    p = np.array([0.6, 0.4])
    delta = np.array([shift_tensor(150, 0, 0), shift_tensor(250, 0, 0)])
    Q = np.array([efg_tensor(7e6, 0.2, R1), efg_tensor(5e6, 0.7, R2)])
    K = exchange.detailed_balance_rate_matrix(p, {(0, 1): 1e-3})
    ppm, ref = mrsim_spectrum([(150, 0, 0, 7e6, 0.2, 60), (250, 0, 0, 5e6, 0.7, 40)], 1e12 if mas else 0, 200)
    assert overlap(ours(delta, Q, K, p, ppm, 200, mas), ref) >= 0.99


def test_fast_exchange_limit_matches_mrsimulator_averaged_shielding_static():
    # the same axial shielding tensor in two orientations 90° apart: the jump averages it to a
    # non-axial tensor whose principal values mrsimulator is given
    p = np.array([0.5, 0.5])
    Rz = Rotation.from_euler("y", 90, degrees=True).as_matrix()
    delta = np.array([shift_tensor(100, 150, 0, R1), shift_tensor(100, 150, 0, R1 @ Rz)])
    avg = tensors.shielding_params(-(p[:, None, None] * delta).sum(axis=0))  # σ = −δ (σ_ref = 0)
    K = exchange.detailed_balance_rate_matrix(p, {(0, 1): 1e9})
    # mrsimulator's ζ is the shielding anisotropy σ_zz − σ_iso (Haeberlen), as soprano's reduced anisotropy
    ppm, ref = mrsim_spectrum([(100, avg.reduced_anisotropy, avg.asymmetry, 0, 0, 100)], 0, 300)
    got = ours(delta, None, K, p, ppm, 300, mas=False, n=6000)
    assert overlap(got, ref) >= 0.99
    slow = ours(delta, None, exchange.detailed_balance_rate_matrix(p, {(0, 1): 1e-3}), p, ppm, 300, False, 6000)
    assert overlap(slow, ref) < 0.9  # the two limits are distinguishable


def test_fast_exchange_limit_matches_mrsimulator_mas_quadrupolar():
    # shared EFG, shifts 180 / 260 ppm with populations 0.7 / 0.3: one CT MAS line at the mean shift
    p = np.array([0.7, 0.3])
    Q = np.array([efg_tensor(6e6, 0.5, R1)] * 2)
    delta = np.array([shift_tensor(180, 80, 0.3, R2), shift_tensor(260, 60, 0.9, R1)])
    K = exchange.detailed_balance_rate_matrix(p, {(0, 1): 1e10})
    ppm, ref = mrsim_spectrum([(0.7 * 180 + 0.3 * 260, 0, 0, 6e6, 0.5, 100)], 1e12, 200)
    assert overlap(ours(delta, Q, K, p, ppm, 200, mas=True), ref) >= 0.99


def test_static_shielding_and_quadrupolar_with_coincident_frames_match_mrsimulator():
    # mrsimulator: both tensors in Haeberlen order in one principal frame (Euler angles 0); the relative
    # orientation of the two interactions shapes the static pattern
    zeta_sigma, eta, cq, eta_q = 200.0, 0.5, 7e6, 0.2
    sigma = -150.0 * np.eye(3) + np.diag([-zeta_sigma * (1 + eta) / 2, -zeta_sigma * (1 - eta) / 2, zeta_sigma])
    Q = np.diag([-cq * (1 + eta_q) / 2, -cq * (1 - eta_q) / 2, cq])
    ppm, ref = mrsim_spectrum([(150, zeta_sigma, eta, cq, eta_q, 100)], 0, 200)
    got = ours(-sigma[None], Q[None], np.zeros((1, 1)), [1.0], ppm, 200, mas=False, n=6000)
    assert overlap(got, ref) >= 0.99
    swapped = np.diag([-cq * (1 - eta_q) / 2, -cq * (1 + eta_q) / 2, cq])  # x ↔ y of the EFG frame
    assert overlap(ours(-sigma[None], swapped[None], np.zeros((1, 1)), [1.0], ppm, 200, False, 6000), ref) < \
        overlap(got, ref)


def test_an_efg_trace_does_not_shift_the_central_transition():
    """A field gradient is traceless; a trace a calculation leaves is removed where the EFG enters."""
    dirs, _ = powder.orientations("zcw", 200)
    iso = powder.ct_second_order_Hz(np.eye(3)[None] * 1e6, dirs, NU0, 2.5)
    assert np.allclose(iso, 0.0, atol=1e-9)
    rng = np.random.default_rng(3)
    q = rng.normal(size=(3, 3)) * 1e6
    q = q + q.T
    q -= np.trace(q) / 3 * np.eye(3)
    assert np.allclose(powder.ct_second_order_Hz((q + 0.01 * 1e6 * np.eye(3))[None], dirs, NU0, 2.5),
                       powder.ct_second_order_Hz(q[None], dirs, NU0, 2.5), atol=1e-9)
    efg = np.diag([0.1, 0.2, -0.3])
    assert np.allclose(tensors.quadrupole_tensor_Hz(efg + 0.004 * np.eye(3)), tensors.quadrupole_tensor_Hz(efg))
    assert tensors.cq_Hz(efg + 0.004 * np.eye(3)) == pytest.approx(tensors.cq_Hz(efg))
