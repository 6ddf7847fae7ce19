"""Exchange under MAS at finite spinning speed: centre-band broadening and cost per spectrum.

    python benchmarks/nmr_finite_mas.py  ->  benchmarks/results/nmr_finite_mas.json

The case of issue 17: two equally populated ¹⁷O sites (23.5 T) with equal δ_iso and one shift tensor,
ζ = 150 ppm, η = 0.5, reoriented by 90° (its unique axis onto its x axis), jumps at k each way, 300 Hz
Lorentzian. The infinite-speed model gives a 300 Hz centre band whatever k; rotor-period propagation
(tasks/nmr/rotor.py) gives its broadening at each spinning rate. Each case also gives the figure for an
axial tensor (η = 0), since the issue does not state η, and what the criterion would choose.
Cost: time per spectrum (2048 points over −100…400 ppm, one BLAS thread) at the ZCW size where the
relative L2 difference to 4181 orientations stays below 1 % for three sizes in a row, as
benchmarks/nmr_spectra.py measures the infinite-speed model.
"""
from __future__ import annotations

import json
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import platform
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from reactforge.tasks.nmr import exchange, powder, rotor, tensors

ROOT = Path(__file__).resolve().parents[1]
FIELD_T, FWHM_HZ, ZETA_PPM, ETA = 23.5, 300.0, 150.0, 0.5
NU0 = tensors.larmor_Hz("17O", FIELD_T)
FWHM_AXIS_HZ = np.linspace(-6000, 6000, 2401)
COST_AXIS_HZ = np.linspace(-100, 400, 2048) * NU0 * 1e-6
FWHM_ORIENTATIONS = 987
REFERENCE_N = 4181
ZCW_SIZES = [13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584]
ISSUE_FWHM_HZ = {(2.4e5, 2e4): 1865.0, (2.4e3, 2e4): 474.0}
CASES = [(k, rate) for rate in (2e4, 1e4, 4e4, 1e5) for k in (2.4e5, 2.4e3)]


def two_sites(eta: float = ETA) -> np.ndarray:
    R = Rotation.from_euler("y", 90, degrees=True).as_matrix()
    t = np.diag([-ZETA_PPM * (1 + eta) / 2, -ZETA_PPM * (1 - eta) / 2, ZETA_PPM])
    return np.array([t, R @ t @ R.T])


def fwhm_at_centre(axis, s):
    c = np.argmin(np.abs(axis))
    half = s[c] / 2.0
    right = c + np.argmax(s[c:] < half)
    left = c - np.argmax(s[c::-1] < half)
    return float(np.interp(half, [s[right], s[right - 1]], [axis[right], axis[right - 1]])
                 - np.interp(half, [s[left], s[left + 1]], [axis[left], axis[left + 1]]))


def spectra(delta, k, rate, n_orient, axis):
    """(finite-speed, infinite-speed) spectra, the steps per period and the criterion's choice."""
    dirs, w = powder.zcw(n_orient)
    coef = rotor.frequency_harmonics(dirs, NU0, delta, None)
    K = exchange.rate_matrix(2, {(0, 1): k, (1, 0): k})
    p = np.array([0.5, 0.5])
    n_steps = rotor.n_steps_for(coef, rate, np.real(coef[:, 0]) @ p)
    finite = rotor.lineshape(coef, K, p, axis, rate, FWHM_HZ, w)
    infinite = exchange.lineshape(np.real(coef[:, 0]), K, p, axis, FWHM_HZ, w)
    chosen = "infinite-speed" if rotor.infinite_speed_valid(coef, K, rate, FWHM_HZ) else "finite-speed"
    return finite, infinite, n_steps, chosen


def best_time(fn, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def convergence(delta, k, rate) -> dict:
    ref = spectra(delta, k, rate, REFERENCE_N, COST_AXIS_HZ)[0]
    errors, below = {}, 0
    for m in ZCW_SIZES:
        s = spectra(delta, k, rate, m, COST_AXIS_HZ)[0]
        errors[m] = float(np.linalg.norm(s - ref) / np.linalg.norm(ref))
        below = below + 1 if errors[m] < 0.01 else 0
        if below == 3:
            break
    n = list(errors)[-3] if below == 3 else None
    dirs, w = powder.zcw(n or ZCW_SIZES[-1])
    coef = rotor.frequency_harmonics(dirs, NU0, delta, None)
    K = exchange.rate_matrix(2, {(0, 1): k, (1, 0): k})
    finite = best_time(lambda: rotor.lineshape(rotor.frequency_harmonics(dirs, NU0, delta, None), K, [0.5, 0.5],
                                               COST_AXIS_HZ, rate, FWHM_HZ, w))
    infinite = best_time(lambda: exchange.lineshape(powder.site_freqs_Hz(dirs, NU0, delta, mas=True), K, [0.5, 0.5],
                                                    COST_AXIS_HZ, FWHM_HZ, w))
    return {"orientations_for_1pct": n, "relative_l2_error_by_orientations": errors,
            "time_s_per_spectrum": finite, "time_s_per_spectrum_infinite_speed": infinite,
            "anisotropic_excursion_Hz": rotor.anisotropic_excursion_Hz(coef)}


def case(k: float, rate: float, with_cost: bool) -> dict:
    t0 = time.perf_counter()
    finite, infinite, n_steps, chosen = spectra(two_sites(), k, rate, FWHM_ORIENTATIONS, FWHM_AXIS_HZ)
    wall = time.perf_counter() - t0
    axial = spectra(two_sites(0.0), k, rate, FWHM_ORIENTATIONS, FWHM_AXIS_HZ)[0]
    row = {"k_per_s": k, "spin_rate_Hz": rate, "centreband_fwhm_Hz": fwhm_at_centre(FWHM_AXIS_HZ, finite),
           "infinite_speed_fwhm_Hz": fwhm_at_centre(FWHM_AXIS_HZ, infinite),
           "issue_fwhm_Hz": ISSUE_FWHM_HZ.get((k, rate)),
           "centreband_fwhm_Hz_axial_eta0": fwhm_at_centre(FWHM_AXIS_HZ, axial),
           "model_chosen": chosen, "orientations": FWHM_ORIENTATIONS, "n_steps": n_steps,
           "wall_s_both_models": wall,
           "system": f"17O {FIELD_T} T, 2 sites p = 0.5, delta_iso equal, zeta {ZETA_PPM} ppm, eta {ETA}, "
                     f"tensor reoriented by 90 deg (unique axis onto x), fwhm {FWHM_HZ} Hz, zcw hemisphere"}
    if with_cost:
        row.update(convergence(two_sites(), k, rate))
    return row


def main() -> dict:
    rows = []
    for k, rate in CASES:
        rows.append(case(k, rate, with_cost=rate == 2e4))
        r = rows[-1]
        print(f"k {k:.1e}  {rate / 1e3:.0f} kHz  FWHM {r['centreband_fwhm_Hz']:.0f} Hz "
              f"(infinite speed {r['infinite_speed_fwhm_Hz']:.0f}, axial {r['centreband_fwhm_Hz_axial_eta0']:.0f}) "
              f"{r['model_chosen']}" + (f"  {r['orientations_for_1pct']} orientations, "
                                        f"{r['time_s_per_spectrum']:.3f} s" if "time_s_per_spectrum" in r else ""),
              flush=True)
    machine = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
               "numpy": np.__version__, "blas_threads": os.environ["OPENBLAS_NUM_THREADS"],
               "load_average_at_end": os.getloadavg()}
    for r in rows:
        r["machine"] = machine
    return {"cases": rows}


if __name__ == "__main__":
    out = ROOT / "benchmarks" / "results" / "nmr_finite_mas.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = main()
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
