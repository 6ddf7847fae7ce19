"""reactforge.tasks.neb: ASE NEB with the MLFF: Cu adatom hop between hollow sites of Cu(100) (ASE's classic
diffusion example), IDPP start, climbing image, and the preconditioned spline path (thesis §3.4.2).

The slab is 3 surface spacings long along the hop, so the hop is a third of the cell: in a 2×2 cell the
two hollows are exactly half a cell apart, the minimum-image interpolation is a tie, and round-off
decides which of the two equivalent bridges the band crosses."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import add_adsorbate, fcc100
from ase.calculators.emt import EMT
from ase.mep import NEB
from ase.optimize import FIRE
from pydantic import ValidationError

from reactforge.schemas.tasks import NEBSpec, OptimiseSpec
from reactforge.tasks import neb, optimise
from reactforge.tasks.context import TaskContext


def _adatom_slab(offset):
    s = fcc100("Cu", size=(3, 2, 3), a=3.61, vacuum=8.0)
    add_adsorbate(s, "Cu", 1.7, "hollow", offset=offset)
    return s


BOTTOM = [i for i, tag in enumerate(_adatom_slab((0, 0)).get_tags()) if tag == 3]  # bottom layer


@pytest.fixture(scope="module")
def endpoints(tiny_gap_model, tmp_path_factory):
    ctx = TaskContext(workdir=tmp_path_factory.mktemp("neb_ends"))
    spec = OptimiseSpec(model=tiny_gap_model, fmax_eV_per_A=0.01, fixed_atoms=BOTTOM)
    return [optimise.run(spec, [_adatom_slab(o)], ctx).final for o in ((0, 0), (1, 0))]


@pytest.fixture(scope="module")
def ci_neb(tiny_gap_model, endpoints, tmp_path_factory):
    spec = NEBSpec(model=tiny_gap_model, n_images=3, fmax_eV_per_A=0.03, fixed_atoms=BOTTOM)
    ctx = TaskContext(workdir=tmp_path_factory.mktemp("neb"))
    return spec, neb.run(spec, endpoints, ctx)


def test_climbing_image_neb_finds_the_bridge_saddle(ci_neb, endpoints):
    spec, result = ci_neb
    assert len(result.images) == len(result.energies_eV) == spec.n_images + 2
    assert result.converged and result.fmax_eV_per_A < spec.fmax_eV_per_A
    for end, image in ((endpoints[0], result.images[0]), (endpoints[1], result.images[-1])):
        np.testing.assert_allclose(image.positions, end.positions, atol=1e-8)
    assert result.forward_barrier_eV > 0.1
    assert result.forward_barrier_eV == pytest.approx(max(result.energies_eV) - result.energies_eV[0])
    assert abs(result.reaction_energy_eV) < 0.01  # equivalent hollow sites
    top = int(np.argmax(result.energies_eV))
    assert result.climbing_image == top == 2
    # the climbing image sits at the bridge, halfway between the two hollows
    x0, x1 = result.images[0].positions[-1, 0], result.images[-1].positions[-1, 0]
    assert result.images[top].positions[-1, 0] == pytest.approx(0.5 * (x0 + x1), abs=0.05)
    for image in result.images:
        np.testing.assert_allclose(image.positions[BOTTOM], endpoints[0].positions[BOTTOM], atol=1e-10)
        assert image.calc is None
    assert len(result.sigma_per_image_eV) == len(result.images)
    assert result.max_sigma_eV == pytest.approx(max(result.sigma_per_image_eV))


def test_barrier_close_to_the_emt_reference(ci_neb, endpoints):
    """The tiny GAP was fitted to EMT: its barrier should resemble EMT's own CI-NEB barrier."""
    _, result = ci_neb
    images = [endpoints[0].copy() for _ in range(4)] + [endpoints[1].copy()]
    for image in images:
        image.calc = EMT()
    band = NEB(images, climb=True, method="improvedtangent")
    band.interpolate(method="idpp", mic=True)
    FIRE(band, logfile=None).run(fmax=0.03, steps=500)
    energies = [a.get_potential_energy() for a in images]
    emt_barrier = max(energies) - energies[0]
    assert result.forward_barrier_eV == pytest.approx(emt_barrier, abs=0.2)


def test_preconditioned_spline_path_agrees(tiny_gap_model, endpoints, ci_neb, tmp_path):
    _, reference = ci_neb
    spec = NEBSpec(
        model=tiny_gap_model, n_images=3, method="spline", precon="Exp", fmax_eV_per_A=0.03, fixed_atoms=BOTTOM
    )
    result = neb.run(spec, endpoints, TaskContext(workdir=tmp_path))
    assert result.converged and result.fmax_eV_per_A < 0.03
    assert result.forward_barrier_eV == pytest.approx(reference.forward_barrier_eV, abs=0.03)
    assert result.climbing_image == int(np.argmax(result.energies_eV))


def test_a_given_band_is_used_as_the_start(tiny_gap_model, ci_neb, tmp_path):
    spec, reference = ci_neb
    result = neb.run(spec, reference.images, TaskContext(workdir=tmp_path))
    assert result.steps <= 2  # already converged
    np.testing.assert_allclose(result.energies_eV, reference.energies_eV, atol=1e-3)


def test_climbing_image_gets_half_the_steps_of_a_band_that_does_not_converge(tiny_gap_model, endpoints, tmp_path):
    """An unreachable fmax: the first stage (no climbing) stops at half the budget and the climbing
    image runs for the rest, so an unconverged band still ends with its top image climbing."""
    spec = NEBSpec(model=tiny_gap_model, n_images=3, fmax_eV_per_A=1e-6, climb_start_fmax_eV_per_A=1e-6,
                   max_steps=8, fixed_atoms=BOTTOM)
    result = neb.run(spec, endpoints, TaskContext(workdir=tmp_path))
    assert not result.converged
    assert result.steps == 8 and result.climbing_steps == 4


def test_linear_interpolation_without_climb(tiny_gap_model, endpoints, tmp_path):
    spec = NEBSpec(
        model=tiny_gap_model, n_images=1, interpolation="linear", climb=False, fmax_eV_per_A=0.05,
        fixed_atoms=BOTTOM,
    )
    result = neb.run(spec, endpoints, TaskContext(workdir=tmp_path))
    assert len(result.images) == 3 and result.climbing_image is None
    assert result.forward_barrier_eV > 0.1


def test_bad_input_is_refused(tiny_gap_model, endpoints, tmp_path):
    ctx = TaskContext(workdir=tmp_path)
    spec = NEBSpec(model=tiny_gap_model, n_images=3)
    with pytest.raises(ValueError, match="n_images"):
        neb.run(spec, endpoints + [endpoints[0]], ctx)
    other = endpoints[1].copy()
    del other[0]
    with pytest.raises(ValueError, match="same atoms"):
        neb.run(spec, [endpoints[0], other], ctx)
    moved = endpoints[1].copy()
    moved.positions[0] += 0.3
    with pytest.raises(ValueError, match="fixed_atoms"):
        neb.run(spec.model_copy(update={"fixed_atoms": BOTTOM}), [endpoints[0], moved], ctx)
    with pytest.raises(ValidationError, match="precon"):
        NEBSpec(model=tiny_gap_model, method="improvedtangent", precon="Exp")


def test_reference_neb_started_from_the_mlff_band(ci_neb, tmp_path):
    """Validation (thesis §3.4.1): a reference NEB initialised with the MLFF's band reports the projected
    force of that band at step 0 and the steps it needed; its barrier is the reference's."""
    from reactforge.schemas.tasks import EMTReference

    _, mlff = ci_neb
    spec = NEBSpec(reference=EMTReference(), n_images=3, fmax_eV_per_A=0.05, fixed_atoms=BOTTOM, max_steps=300)
    result = neb.run(spec, mlff.images, TaskContext(workdir=tmp_path))
    assert result.fmax_initial_eV_per_A is not None and result.fmax_initial_eV_per_A > 0
    assert result.converged and result.fmax_eV_per_A < 0.05
    # the EMT barrier from the MLFF start agrees with EMT's own barrier computed independently
    probe = [a.copy() for a in result.images]
    for a in probe:
        a.calc = EMT()
    energies = [a.get_potential_energy() for a in probe]
    assert result.energies_eV == pytest.approx(energies, abs=1e-8)
    assert result.max_sigma_eV == 0.0
    # reference calls: every interior image at least once per optimiser step, endpoints once each
    n = spec.n_images
    assert n * max(result.steps, 1) + 2 <= result.energy_evaluations <= (n + 2) * (result.steps + 3)
    with pytest.raises(ValidationError):
        NEBSpec(n_images=3)  # neither model nor reference


def test_preconditioned_spline_path_through_the_periodic_boundary(tiny_gap_model, endpoints, ci_neb, tmp_path):
    """The hollow two spacings to the right is one spacing to the left through the cell's edge: the
    minimum-image band crosses the boundary (the branch a 2×2 cell's tie may take) and must find the
    same bridge barrier as the hop inside the cell."""
    _, reference = ci_neb
    ctx = TaskContext(workdir=tmp_path / "ends")
    far = optimise.run(OptimiseSpec(model=tiny_gap_model, fmax_eV_per_A=0.01, fixed_atoms=BOTTOM),
                       [_adatom_slab((2, 0))], ctx).final
    spec = NEBSpec(
        model=tiny_gap_model, n_images=3, method="spline", precon="Exp", fmax_eV_per_A=0.03, fixed_atoms=BOTTOM
    )
    result = neb.run(spec, [endpoints[0], far], TaskContext(workdir=tmp_path))
    assert result.converged and result.fmax_eV_per_A < 0.03
    assert result.forward_barrier_eV == pytest.approx(reference.forward_barrier_eV, abs=0.03)
    # the adatom moved left by one surface spacing, modulo the lattice
    cell_x = endpoints[0].cell[0, 0]
    step = (result.images[-1].positions[-1, 0] - result.images[0].positions[-1, 0]) % cell_x
    assert step == pytest.approx(cell_x * 2 / 3, abs=0.05)
    top = result.images[result.climbing_image].positions[-1, 0]
    bridge = (result.images[0].positions[-1, 0] - cell_x / 6) % cell_x
    assert (top - bridge + cell_x / 2) % cell_x - cell_x / 2 == pytest.approx(0.0, abs=0.05)
