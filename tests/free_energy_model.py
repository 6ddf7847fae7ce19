"""An analytic 2-D potential with a free energy known in closed form, for testing umbrella sampling.

Three atoms: atom 0 fixed at the origin, atom 1 free to move along x only, atom 2 along y only. The
collective variable is ξ = d(0, 1) (exactly x₁: no Jacobian), the transverse mode is s = y₂:

    V(ξ, s) = h ((ξ − c)²/a² − 1)² + ½ k(ξ) s²,   k(ξ) = k‡ (1 + 3 (ξ − c)²/a²)

a double well along ξ (minima at c ± a, barrier h at c) whose transverse mode stiffens four-fold from
the top to the minima. Integrating s out exactly,

    A(ξ) = h ((ξ − c)²/a² − 1)² + (kT/2) ln k(ξ) + const,

so ΔA‡ = h − (kT/2) ln 4 (up to where the extrema sit): the softer transverse mode at the top lowers the
free-energy barrier with temperature, and ΔA‡ → h, the potential-energy (band) barrier, as T → 0.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.constraints import FixAtoms, FixedLine

H_EV, C_A, A_A, K_TS = 0.2, 2.0, 0.25, 1.0  # barrier (eV), top (Å), half well separation (Å), k‡ (eV/Å²)


def potential(xi, s=0.0):
    u2 = (np.asarray(xi) - C_A) ** 2 / A_A**2
    return H_EV * (u2 - 1) ** 2 + 0.5 * K_TS * (1 + 3 * u2) * np.asarray(s) ** 2


def exact_free_energy(xi, temperature_K: float) -> np.ndarray:
    """A(ξ) up to a constant (eV)."""
    u2 = (np.asarray(xi) - C_A) ** 2 / A_A**2
    return H_EV * (u2 - 1) ** 2 + 0.5 * units.kB * temperature_K * np.log(K_TS * (1 + 3 * u2))


def exact_barrier(temperature_K: float, lo: float = C_A - 2 * A_A, hi: float = C_A + 2 * A_A) -> float:
    """Forward ΔA‡ from the ξ < c well over the top, on a fine grid of the closed form."""
    xi = np.linspace(lo, hi, 200_001)
    A = exact_free_energy(xi, temperature_K)
    top = np.argmax(np.where(np.abs(xi - C_A) < A_A, A, -np.inf))
    return float(A[top] - A[:top + 1].min())


class DoubleWellTransverse(Calculator):
    implemented_properties = ["energy", "free_energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        p = self.atoms.positions
        vec = p[1] - p[0]
        xi = float(np.linalg.norm(vec))
        s = float(p[2, 1])
        u = (xi - C_A) / A_A
        k = K_TS * (1 + 3 * u * u)
        dV_dxi = 4 * H_EV * (u * u - 1) * u / A_A + 0.5 * (6 * K_TS * u / A_A) * s * s
        forces = np.zeros_like(p)
        forces[1] = -dV_dxi * vec / xi
        forces[0] = -forces[1]
        forces[2, 1] = -k * s
        energy = float(potential(xi, s))
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}


def model_system(xi: float = C_A - A_A) -> Atoms:
    atoms = Atoms("HeCC", positions=[[0, 0, 0], [xi, 0, 0], [0, 0, 5.0]], cell=[20, 20, 20], pbc=False)
    atoms.set_constraint([FixAtoms([0]), FixedLine(1, [1, 0, 0]), FixedLine(2, [0, 1, 0])])
    atoms.calc = DoubleWellTransverse()
    return atoms


def exact_window_samples(centre: float, spring: float, temperature_K: float, n: int,
                         rng: np.random.Generator) -> np.ndarray:
    """n independent ξ drawn from the exact biased distribution exp(−β(A(ξ) + K/2 (ξ − ξᵢ)²)) of a window
    (inverse transform on a fine grid)."""
    beta = 1.0 / (units.kB * temperature_K)
    xi = np.linspace(centre - 1.0, centre + 1.0, 40_001)
    e = exact_free_energy(xi, temperature_K) + 0.5 * spring * (xi - centre) ** 2
    p = np.exp(-beta * (e - e.min()))
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return np.interp(rng.random(n), cdf, xi)


def langevin_window(centre: float, spring: float, temperature_K: float, steps: int, equilibration: int,
                    friction_per_fs: float = 0.2, seed: int = 0) -> np.ndarray:
    """ξ after each production step of one umbrella window of ASE Langevin MD on the model, biased by the
    umbrella task's own restraint (tasks/umbrella.py), 1 fs steps."""
    from ase.md.langevin import Langevin

    from reactforge.tasks.umbrella import DistanceRestraint

    atoms = model_system(centre)
    atoms.set_constraint([DistanceRestraint(0, 1, centre, spring), *atoms.constraints])
    dyn = Langevin(atoms, timestep=units.fs, temperature_K=temperature_K, friction=friction_per_fs / units.fs,
                   fixcm=False, rng=np.random.default_rng(seed), logfile=None)
    xi = []
    for _ in dyn.irun(equilibration + steps):
        if dyn.nsteps > equilibration:
            xi.append(atoms.get_distance(0, 1))
    return np.array(xi)
