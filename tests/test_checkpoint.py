"""Long MLFF tasks resume from their last checkpoint, not step 0, and a resumed trajectory is the one an
uninterrupted run produces (positions, momenta and random-number state are all restored)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from ase.build import add_adsorbate, fcc111

from reactforge.schemas.tasks import MDSpec, MinimaHoppingSpec, UmbrellaWindowSpec
from reactforge.tasks import md, umbrella
from reactforge.tasks.checkpoint import Checkpoint
from reactforge.tasks.context import TaskContext
from reactforge.tasks.minimahopping import run as hop
from reactforge.tasks.mlff import load_mlff


class NodeLost(Exception):
    """Stands for the SIGKILL a walltime or a lost node delivers mid-segment."""


def _slab():
    s = fcc111("Cu", size=(2, 2, 3), a=3.61, vacuum=8.0)
    add_adsorbate(s, "Cu", 2.0, "fcc")
    return s


def _dying_after(module, monkeypatch, calls: int):
    """The task's MLFF raises NodeLost on its `calls`-th evaluation."""
    real = module.load_mlff
    count = {"n": 0}

    def load(model, device="cpu"):
        calc = real(model, device)
        inner = calc.calculate

        def calculate(*args, **kwargs):
            count["n"] += 1
            if count["n"] == calls:
                raise NodeLost
            return inner(*args, **kwargs)

        calc.calculate = calculate
        return calc

    monkeypatch.setattr(module, "load_mlff", load)


def _ctx(path, interval=0.0):
    return TaskContext(workdir=path / "work", checkpoint_dir=path / "checkpoint", checkpoint_interval_s=interval)


def test_md_resumes_from_the_last_segment_and_reproduces_the_uninterrupted_run(tiny_gap_model, tmp_path, monkeypatch):
    spec = MDSpec(model=tiny_gap_model, steps=30, check_every=4, sigma_thr_eV=10.0, temperature_K=500, seed=5)
    whole = md.run(spec, [_slab()], _ctx(tmp_path / "a"))
    assert whole.resumed_from_step == 0 and whole.steps_run == 30

    ctx = _ctx(tmp_path / "b")
    with monkeypatch.context() as m:
        _dying_after(md, m, calls=20)
        with pytest.raises(NodeLost):
            md.run(spec, [_slab()], ctx)
    resumed = md.run(spec, [_slab()], ctx)
    assert 10 <= resumed.resumed_from_step < 20  # continued from the last save, not from step 0
    assert resumed.steps_run == 30
    np.testing.assert_allclose(resumed.final.positions, whole.final.positions, atol=1e-10)
    assert resumed.trace_steps == whole.trace_steps
    np.testing.assert_allclose(resumed.sigma_trace_eV, whole.sigma_trace_eV, atol=1e-10)
    assert resumed.step_sampled == whole.step_sampled and resumed.max_sigma_eV == pytest.approx(whole.max_sigma_eV)


def test_umbrella_window_resumes_with_its_cv_samples(tiny_gap_model, tmp_path, monkeypatch):
    start = _slab()
    d0 = start.get_distance(12, 8, mic=True)
    spec = UmbrellaWindowSpec(model=tiny_gap_model, atom_i=12, atom_j=8, centre_A=d0, equilibration_steps=10,
                              production_steps=30, sample_every=3, seed=2)
    whole = umbrella.run(spec, [start], _ctx(tmp_path / "a"))
    ctx = _ctx(tmp_path / "b")
    with monkeypatch.context() as m:
        _dying_after(umbrella, m, calls=25)
        with pytest.raises(NodeLost):
            umbrella.run(spec, [start], ctx)
    resumed = umbrella.run(spec, [start], ctx)
    assert resumed.resumed_from_step > 10
    assert len(resumed.cv_A) == 10
    np.testing.assert_allclose(resumed.cv_A, whole.cv_A, atol=1e-10)
    np.testing.assert_allclose(resumed.final.positions, whole.final.positions, atol=1e-10)


def test_no_checkpoint_is_written_before_its_interval(tiny_gap_model, tmp_path):
    spec = MDSpec(model=tiny_gap_model, steps=5, sigma_thr_eV=10.0)
    md.run(spec, [_slab()], _ctx(tmp_path, interval=3600.0))
    assert not (tmp_path / "checkpoint" / "md.npz").exists()


def test_a_damaged_checkpoint_restarts_from_step_0(tiny_gap_model, tmp_path):
    ctx = _ctx(tmp_path)
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "md.npz").write_bytes(b"PK\x03\x04 cut mid-write")
    assert Checkpoint(ctx, "md").load(_slab()) is None
    result = md.run(MDSpec(model=tiny_gap_model, steps=4, sigma_thr_eV=10.0), [_slab()], ctx)
    assert result.resumed_from_step == 0 and result.steps_run == 4


@pytest.mark.parametrize("md_traj", ["written", "not yet created"])
def test_minima_hopping_killed_mid_search_continues_it(tiny_gap_model, tmp_path, md_traj):
    """SIGKILL the search process once its first MD hop has started; the next attempt resumes it. Also
    when the kill came between ASE's log line for that MD and the creation of its trajectory."""
    frozen = [i for i, tag in enumerate(_slab().get_tags()) if tag >= 2]
    spec = MinimaHoppingSpec(model=tiny_gap_model, n_minima=50, max_hops=2, mdmin=1, T0_K=500.0,
                             fixed_atoms=frozen, seed=2)
    ctx = _ctx(tmp_path)
    folder = tmp_path / "checkpoint" / "minimahopping"
    code = (
        "import sys; from ase.build import add_adsorbate, fcc111\n"
        "from reactforge.schemas.tasks import MinimaHoppingSpec\n"
        "from reactforge.tasks.context import TaskContext\n"
        "from reactforge.tasks.minimahopping import run\n"
        "s = fcc111('Cu', size=(2, 2, 3), a=3.61, vacuum=8.0); add_adsorbate(s, 'Cu', 2.0, 'fcc')\n"
        f"ctx = TaskContext(workdir={str(ctx.workdir)!r}, checkpoint_dir={str(ctx.checkpoint_dir)!r})\n"
        f"run(MinimaHoppingSpec.model_validate_json({spec.model_dump_json()!r}), [s], ctx)\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 300
    traj = folder / "md00001.traj"
    while not ((folder / "hop.log").exists() and "md00001" in (folder / "hop.log").read_text()
               and traj.exists() and traj.stat().st_size > 0):
        assert worker.poll() is None, "the search ended before it could be interrupted"
        assert time.monotonic() < deadline, "no MD hop started"
        time.sleep(0.05)
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its search process, as a node loss would
    worker.wait()
    if md_traj == "not yet created":
        traj.unlink()

    result = hop(spec, [_slab()], ctx)
    assert result.resumed
    assert result.hops == 2
    log = (folder / "hop.log").read_text()
    assert "Attempting to resume" in log and log.count("Performing initial optimization") == 1
    calc = load_mlff(tiny_gap_model)
    for minimum, energy in zip(result.minima, result.energies_eV):
        minimum.calc = calc
        assert minimum.get_potential_energy() == pytest.approx(energy, abs=1e-6)
