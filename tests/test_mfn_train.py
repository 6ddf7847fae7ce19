"""MFN training (energies + forces), the `train` task with an MFN spec, and MD through the ASE calculator."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import reactforge.models.mfn  # noqa: F401  (mace before e3nn)
from mace.tools.utils import AtomicNumberTable

from reactforge.models.mfn import data as mfn_data
from reactforge.models.mfn.cumulene import cumulene, label, xtb_calculator
from reactforge.models.mfn.model import MFN
from reactforge.models.mfn.train import avg_neighbours, data_statistics, fit, mfn_config_from_spec
from reactforge.schemas.tasks import MFNModelSpec, ModelRef, TrainSpec

TINY = dict(
    channels=4, max_ell=1, correlation=2, matrix_channels=2, n_poles=2, batch_size=4, lr=1e-2,
    energy_weight=100.0, forces_weight=1.0, matrix_norm="layer",
)


@pytest.fixture(scope="module")
def labelled():
    """Rattled, twisted C3–C5 cumulenes with GFN2-xTB labels."""
    rng = np.random.default_rng(0)
    calc = xtb_calculator()
    out = []
    for n_c in (3, 4, 5):
        for phi in (0.0, 30.0, 60.0, 90.0):
            a = cumulene(n_c, phi)
            a.positions += rng.normal(0, 0.03, a.positions.shape)
            out.append(label(a, calc))
    return out


@pytest.fixture
def float64():
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(prev)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra OpenMP threads only add contention
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("forces_weight", [1.0, 0.0])
def test_training_reduces_energy_force_loss(labelled, float64, forces_weight):
    """With forces in the loss (differentiated twice) and energy-only (one backward pass, no force pass)."""
    spec = MFNModelSpec(**{**TINY, "forces_weight": forces_weight}, max_num_epochs=12)
    z = AtomicNumberTable([1, 6])
    graphs = mfn_data.graphs(labelled, z, spec.r_max_A)
    e0s, scale = data_statistics(labelled, [1, 6])
    torch.manual_seed(0)
    model = MFN(mfn_config_from_spec(spec, [1, 6], e0s, scale, avg_neighbours(graphs)))
    res = fit(model, graphs, graphs, epochs=spec.max_num_epochs, lr=spec.lr, energy_weight=spec.energy_weight,
              forces_weight=spec.forces_weight, batch_size=spec.batch_size)
    first, best = res["history"][0]["valid_loss"], res["best_valid_loss"]
    assert best < 0.5 * first, (first, best)


def test_mfn_spec_rejects_bad_input():
    with pytest.raises(ValueError, match="matrix_l_max"):
        MFNModelSpec(matrix_l_max=2)
    with pytest.raises(ValueError, match="n_poles"):
        MFNModelSpec(n_poles=0)
    with pytest.raises(ValueError, match="seeds"):
        MFNModelSpec(committee_size=2, seeds=[1])


def test_train_task_then_md_through_ase_calculator(labelled, tmp_path):
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from reactforge.tasks import run_task
    from reactforge.tasks.context import TaskContext
    from reactforge.tasks.mlff import load_mlff

    spec = TrainSpec(model=MFNModelSpec(**TINY, max_num_epochs=3), device="cpu")
    result = run_task(spec, labelled, TaskContext(workdir=tmp_path / "train"))
    assert result.model.model == "mfn" and len(result.model.paths) == 1
    assert np.isfinite(result.train_rmse_energy_meV_per_atom)

    calc = load_mlff(ModelRef(**result.model.model_dump()), device="cpu")
    atoms = labelled[5].copy()
    atoms.calc = calc
    # forces are the exact negative gradient of the energy (finite difference along one coordinate)
    f = atoms.get_forces()
    h = 1e-4
    plus, minus = atoms.copy(), atoms.copy()
    plus.positions[2, 0] += h
    minus.positions[2, 0] -= h
    plus.calc, minus.calc = calc, calc
    e_plus, e_minus = plus.get_potential_energy(), minus.get_potential_energy()
    assert f[2, 0] == pytest.approx(-(e_plus - e_minus) / (2 * h), rel=1e-5, abs=1e-7)
    assert calc.results["sigma_per_atom"].shape == (len(atoms),)

    MaxwellBoltzmannDistribution(atoms, temperature_K=100, rng=np.random.default_rng(0))
    e0 = atoms.get_total_energy()
    dyn = VelocityVerlet(atoms, timestep=0.25 * units.fs)
    dyn.run(20)
    assert np.all(np.isfinite(atoms.positions))
    assert abs(atoms.get_total_energy() - e0) < 0.02  # NVE: conservative forces keep the total energy
