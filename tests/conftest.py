"""Shared fixtures.

- `emt_cu_training_set` (fresh copies per test, labelled once per session): EMT-labelled Cu, a list
  of ase.Atoms carrying info["REF_energy"] (eV), arrays["REF_forces"] (eV/Å) and, for periodic
  bulk, info["REF_stress"] (Voigt, eV/Å³):
  10 rattled fcc bulk cells (2×2×2 conventional, 32 atoms, lattice 3.55–3.66 Å, rattle 0.05–0.1 Å),
  8 rattled Cu(111) slabs (2×2×3, 12 atoms, 8 Å vacuum, bottom layer fixed in the rattle), and one
  isolated Cu atom (config_type="isolated_atom", E0).
- `tiny_gap_model` (session): `schemas.tasks.ModelRef` of a small GAP (one soap_turbo term, l_max 3,
  alpha_max 4, 4.0/3.5 Å cut-offs, 40 sparse points) fitted by `tasks.train` on that set; load it with
  `tasks.mlff.load_mlff(ref)`. σ per atom is ~1 meV on fcc/slab Cu near the training data and grows
  to tens of meV far from it (≈20 meV for a 15 % compressed cell or a Cu dimer, ≈60 meV at 25 %);
  the prior limit is δ = 0.1 eV.
- `tiny_mace_fit` (session): TrainResult of a 2-member MACE committee (8x0e, 3 epochs) on 12 of the
  configurations above; `.model` is its ModelRef (about a minute to train: use it only where needed).
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms

from reactforge.schemas.tasks import GAPModelSpec, MACEModelSpec, ModelRef, SOAPDescriptor, TrainSpec
from reactforge.tasks.context import TaskContext


def emt_label(atoms: Atoms) -> Atoms:
    """Copy of `atoms` with EMT reference labels in the REF_ keys (no calculator attached)."""
    a = atoms.copy()
    a.calc = EMT()
    a.info["REF_energy"] = float(a.get_potential_energy())
    a.arrays["REF_forces"] = a.get_forces(apply_constraint=False)
    if a.pbc.all():
        a.info["REF_stress"] = a.get_stress()
    a.calc = None
    a.set_constraint()
    return a


def make_emt_cu_training_set() -> list[Atoms]:
    rng = np.random.default_rng(42)
    images = []
    for i, lattice in enumerate(np.linspace(3.55, 3.66, 10)):
        a = bulk("Cu", "fcc", a=lattice, cubic=True).repeat((2, 2, 2))
        a.rattle(stdev=0.05 + 0.05 * (i % 2), seed=int(rng.integers(1 << 30)))
        a.info["config_type"] = "bulk"
        images.append(emt_label(a))
    for i in range(8):
        s = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=8.0)
        s.set_constraint(FixAtoms(indices=[at.index for at in s if at.tag == 3]))
        s.rattle(stdev=0.08, seed=int(rng.integers(1 << 30)))
        s.info["config_type"] = "slab"
        images.append(emt_label(s))
    iso = Atoms("Cu", positions=[[0.0, 0.0, 0.0]], cell=[15.0, 15.0, 15.0], pbc=False)
    iso = emt_label(iso)
    iso.arrays["REF_forces"] = np.zeros((1, 3))
    iso.info["config_type"] = "isolated_atom"
    images.append(iso)
    return images


class Quiet:
    """A workflow's progress reporter that reports nothing."""

    def set_stage(self, stage):
        pass

    def log(self, message):
        pass


def store_labels(store, training_set: list[Atoms], reference: str = "emt") -> None:
    """Labelled structures (REF_* info/arrays) into a run's labels database, as a finished run holds them."""
    from reactforge.schemas.results import SinglePointResult

    for k, a in enumerate(training_set):
        plain = a.copy()
        plain.info, plain.calc = {}, None
        del plain.arrays["REF_forces"]
        stress = a.info.get("REF_stress")
        store.add_label(SinglePointResult(atoms=plain, energy_eV=a.info["REF_energy"],
                                          forces_eV_per_A=a.arrays["REF_forces"].tolist(),
                                          stress_eV_per_A3=None if stress is None else list(stress),
                                          reference=reference),
                        block="initial", iteration=0, reason="test set", task=f"task{k:03d}",
                        config_type=a.info.get("config_type"))


def tiny_gap_spec() -> TrainSpec:
    soap = SOAPDescriptor(rcut_hard_A=4.0, rcut_soft_A=3.5, l_max=3, alpha_max=4, n_sparse=40)
    return TrainSpec(model=GAPModelSpec(soap=[soap], sigma_energy_eV=0.002, sigma_force_eV_per_A=0.02))


@functools.lru_cache(maxsize=1)
def _emt_cu_training_set() -> tuple[Atoms, ...]:
    return tuple(make_emt_cu_training_set())


@pytest.fixture
def emt_cu_training_set() -> list[Atoms]:
    """Fresh copies for every test (labelled once per session)."""
    return [a.copy() for a in _emt_cu_training_set()]


@pytest.fixture(scope="session")
def tiny_gap_fit(tmp_path_factory):
    """TrainResult of the tiny GAP (fitted once per session)."""
    from reactforge.tasks.train import run

    ctx = TaskContext(workdir=tmp_path_factory.mktemp("tiny_gap"))
    return run(tiny_gap_spec(), [a.copy() for a in _emt_cu_training_set()], ctx)


@pytest.fixture(scope="session")
def tiny_gap_model(tiny_gap_fit) -> ModelRef:
    return tiny_gap_fit.model


def tiny_mace_spec() -> TrainSpec:
    return TrainSpec(
        model=MACEModelSpec(
            committee_size=2,
            hidden_irreps="8x0e",
            max_L=0,
            max_ell=1,
            correlation=2,
            r_max_A=4.0,
            num_interactions=1,
            max_num_epochs=3,
            batch_size=4,
        )
    )


@pytest.fixture(scope="session")
def tiny_mace_fit(tmp_path_factory):
    """TrainResult of a 2-member MACE committee trained on 5 bulk + 6 slab configurations + the atom."""
    from reactforge.tasks.train import run

    full = [a.copy() for a in _emt_cu_training_set()]
    data = full[:5] + full[10:16] + full[-1:]
    ctx = TaskContext(workdir=tmp_path_factory.mktemp("tiny_mace"))
    return run(tiny_mace_spec(), data, ctx)


def cu_adatom_minima(calc) -> list[Atoms]:
    """A Cu adatom in the fcc and in the hcp hollow of Cu(111), relaxed with `calc` (bottom layer fixed):
    two minima one hop apart, for the NMR rates and band tests."""
    from ase.build import add_adsorbate, fcc111
    from ase.constraints import FixAtoms
    from ase.optimize import BFGS

    minima = []
    for site in ("fcc", "hcp"):
        slab = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=8.0)
        add_adsorbate(slab, Atoms("Cu"), 2.0, site)
        slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag == 3]))
        slab.calc = calc
        BFGS(slab, logfile=None).run(fmax=0.005, steps=300)
        slab.calc = None
        slab.info.pop("adsorbate_info", None)
        minima.append(slab)
    return minima


def max_sigmas(model, structures) -> list[float]:
    """Largest per-atom σ of each structure under `model` (a ModelRef), evaluated afresh."""
    from reactforge.tasks.mlff import load_mlff

    calc, out = load_mlff(model), []
    for a in structures:
        a = a.copy()
        a.calc = calc
        a.get_potential_energy()
        out.append(float(np.max(calc.results["sigma_per_atom"])))
    return out
