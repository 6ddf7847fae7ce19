"""The `evaluate` and `vibrations` kinds: MLFF numbers computed by a task, checked against the calculator's
own, and the same numbers when they come back through the engine (journaled, on the mlff executor)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111
from ase.constraints import FixAtoms
from ase.vibrations import Vibrations

from reactforge.schemas.kinds import KINDS
from reactforge.schemas.loading import read_yaml, validate
from reactforge.schemas.site import SiteConfig
from reactforge.schemas.tasks import EvaluateSpec, VibrationsSpec
from reactforge.tasks import run_task
from reactforge.tasks.context import TaskContext
from reactforge.tasks.mlff import load_mlff
from reactforge.tasks.nmr.rates import H_EV_S

ROOT = Path(__file__).resolve().parents[1]


def structures():
    cell = bulk("Cu", "fcc", a=3.55, cubic=True).repeat((2, 2, 2))
    cell.rattle(0.08, seed=4)
    slab = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=8.0)
    slab.rattle(0.05, seed=5)
    slab.info.pop("adsorbate_info", None)
    slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag == 3]))
    return [cell, slab]


def adatom():
    slab = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=8.0)
    add_adsorbate(slab, Atoms("Cu"), 2.1, "bridge")  # not a minimum: a soft direction along the bridge
    slab.info.pop("adsorbate_info", None)
    slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag == 3]))
    return slab


def test_evaluate_gives_the_calculators_energy_forces_and_sigma(tmp_path, tiny_gap_model):
    atoms = structures()
    res = run_task(EvaluateSpec(model=tiny_gap_model), atoms, TaskContext(workdir=tmp_path))
    calc = load_mlff(tiny_gap_model)
    assert len(res.energies_eV) == len(atoms)
    for k, a in enumerate(atoms):
        b = a.copy()
        b.calc = calc
        assert res.energies_eV[k] == pytest.approx(b.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(res.forces_eV_per_A[k], b.get_forces(), atol=1e-9)
        np.testing.assert_allclose(res.sigma_per_atom_eV[k], calc.results["sigma_per_atom"], atol=1e-12)
    fixed = atoms[1].constraints[0].index
    assert np.all(np.asarray(res.forces_eV_per_A[1])[fixed] == 0.0)  # like the reference labels
    assert np.abs(np.asarray(res.forces_eV_per_A[1])).max() > 0.01
    assert min(map(min, res.sigma_per_atom_eV)) > 0.0


def test_vibrations_are_ase_vibrations_with_the_mlff(tmp_path, tiny_gap_model):
    atoms = adatom()
    spec = VibrationsSpec(model=tiny_gap_model, indices=[12], delta_A=0.01)
    res = run_task(spec, [atoms], TaskContext(workdir=tmp_path / "task"))

    a = atoms.copy()
    a.calc = load_mlff(tiny_gap_model)
    energy = a.get_potential_energy()
    vib = Vibrations(a, indices=[12], name=str(tmp_path / "check"), delta=0.01, nfree=2)
    vib.run()
    expected = np.asarray(vib.get_energies(), dtype=complex) / H_EV_S
    assert res.indices == [12] and len(res.frequencies_Hz) == 3
    assert res.energy_eV == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(res.frequencies(), expected, rtol=1e-9, atol=1.0)
    assert np.abs(expected).min() > 1e11  # real modes of an adatom: THz, not numerical noise


def test_both_kinds_run_on_the_mlff_executor_and_replay_from_the_journal(tmp_path, tiny_gap_model):
    from reactforge.engine.engine import Engine

    assert KINDS["evaluate"].resource_of(EvaluateSpec(model=tiny_gap_model)) == "mlff"
    assert KINDS["vibrations"].resource_of(VibrationsSpec(model=tiny_gap_model)) == "mlff"
    site = validate("local", read_yaml(ROOT / "site-configs" / "local.yaml"), SiteConfig)
    atoms = structures()
    direct = run_task(EvaluateSpec(model=tiny_gap_model), atoms, TaskContext(workdir=tmp_path / "direct"))
    vib_spec = VibrationsSpec(model=tiny_gap_model, indices=[12])
    for attempt in range(2):  # the second run is answered from the journal
        with Engine(site, tmp_path / "run") as engine:
            ev = engine.submit(EvaluateSpec(model=tiny_gap_model), atoms)
            vi = engine.submit(vib_spec, [adatom()])
            evaluated, modes = ev.result(), vi.result()
            assert engine.stats()[site.executor_for("mlff")]["cached"] == 2 * attempt
        np.testing.assert_allclose(evaluated.energies_eV, direct.energies_eV, atol=1e-6)  # extxyz positions: 1e-8 Å
        np.testing.assert_allclose(np.concatenate([np.ravel(f) for f in evaluated.forces_eV_per_A]),
                                   np.concatenate([np.ravel(f) for f in direct.forces_eV_per_A]), atol=1e-5)
        assert len(modes.frequencies_Hz) == 3
