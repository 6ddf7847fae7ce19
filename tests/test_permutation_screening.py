"""Block 6's two-stage screening of like-atom permutations: short non-climbing bands for every
ordering, the full climbing-image NEB only for the lowest (and those within the margin); an ordering
far above the best for two iterations in a row is dropped. EMT, two Cu adatoms on Cu(100)."""
from __future__ import annotations

from pathlib import Path

import pytest
from ase import Atoms

from reactforge.engine.engine import Engine
from reactforge.schemas.loading import read_yaml, validate
from reactforge.schemas.site import SiteConfig
from reactforge.schemas.tasks import EMTReference, NEBSpec
from reactforge.workflows import catalysis_build as build
from reactforge.workflows import sampling, screening

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "cu-adatom-hop.yaml"


def _adatoms(slab: Atoms, xy: list[tuple[float, float]]) -> Atoms:
    atoms = slab.copy()
    top = slab.positions[:, 2].max()
    atoms += Atoms("Cu2", positions=[(x, y, top + 1.66) for x, y in xy])
    return atoms


@pytest.fixture(scope="module")
def dimer_split():
    """A Cu adatom pair in neighbouring hollows; the left one hops one hollow further left. The final
    state lists the atom that stays first, so the identity ordering (the one a user writes, screened
    first) moves both atoms through each other, and the swapped one is a single hop."""
    import yaml
    from reactforge.schemas.protocol import Protocol

    data = yaml.safe_load(EXAMPLE.read_text())
    data["surface"]["size"] = [3, 3]  # 10.8 Å: the two paths are not periodic images of each other
    slab = build.build_slab(build.build_bulk(Protocol.model_validate(data).bulk, repeat=False),
                            Protocol.model_validate(data).surface)
    initial = _adatoms(slab, [(1.795, 1.795), (3.59, 3.59)])
    final = _adatoms(slab, [(3.59, 3.59), (0.0, 0.0)])
    return initial, final, build.fixed_indices(slab)


def _site():
    return validate("local", read_yaml(ROOT / "site-configs" / "local.yaml"), SiteConfig)


def _specs(fixed):
    common = dict(reference=EMTReference(), n_images=3, method="improvedtangent", precon=None,
                  fmax_eV_per_A=0.05, fixed_atoms=fixed)
    return NEBSpec(climb=False, max_steps=20, **common), NEBSpec(climb=True, max_steps=200, **common)


def test_a_clearly_worse_ordering_gets_no_full_neb_and_the_lowest_path_is_found(dimer_split, tmp_path):
    initial, final, fixed = dimer_split
    n_slab = len(initial) - 2
    orders = [order for order, _ in sampling.like_atom_permutations(initial, final, range(n_slab, len(initial)))]
    assert len(orders) == 2 and orders[0] == list(range(len(final)))  # the identity is screened first
    starts = {k: [initial, sampling.apply_order(final, order)] for k, order in enumerate(orders)}
    short, full = _specs(fixed)
    with Engine(_site(), tmp_path) as engine:
        result = screening.screen(engine, short, full, starts, margin_eV=0.1).result(timeout=600)
    e = result.screened_max_eV
    assert e[0] > e[1] + 0.5  # atoms passing through each other: far above after 20 steps
    assert result.full == [1]  # ... and never given the full climbing-image NEB
    assert result.lowest() == 1
    best = result.results[1]
    # one adatom leaving its neighbour: a single hop, climbing image converged
    assert best.converged and best.climbing_image is not None and 0.3 < best.forward_barrier_eV < 0.8


def test_an_ordering_far_above_for_two_iterations_in_a_row_is_dropped():
    strikes: dict[int, int] = {}
    active = [0, 1, 2]
    # iteration 1: 2 is far above, 1 within the drop margin
    strikes = screening.strikes_after(strikes, {0: -5.0, 1: -4.8, 2: -3.0}, best=0, drop_margin_eV=0.5)
    assert screening.kept(active, strikes) == [0, 1, 2]
    # iteration 2: 1 is far above once, 2 a second time in a row
    strikes = screening.strikes_after(strikes, {0: -5.0, 1: -4.0, 2: -3.5}, best=0, drop_margin_eV=0.5)
    assert screening.kept(active, strikes) == [0, 1]
    # a strike is forgotten when the band comes back within the margin
    strikes = screening.strikes_after(strikes, {0: -5.0, 1: -4.9}, best=0, drop_margin_eV=0.5)
    assert strikes == {0: 0, 1: 0}


def test_the_full_nebs_are_the_lowest_and_those_within_the_margin():
    assert screening.within_margin({0: -3.0, 1: -3.05, 2: -2.0, 3: None}, 0.1) == [0, 1]
    assert screening.within_margin({0: None}, 0.1) == []
    tie = screening.Screened({}, [0, 1], {0: _band(1.0), 1: _band(1.0)})
    assert tie.lowest() == 0  # a tie goes to the lower index, whatever finished first


def _band(top_eV: float, converged: bool = True):
    return type("R", (), {"energies_eV": [0.0, top_eV, -0.2], "converged": converged})()


def test_a_band_stopped_by_its_step_budget_does_not_win_over_a_converged_one():
    # the unconverged climbing band's top image is still below the saddle: lower, but not a barrier
    cut_short = screening.Screened({}, [0, 1], {0: _band(0.113, converged=False), 1: _band(0.152)})
    assert cut_short.lowest() == 1
    # with no converged band the lowest is still the best estimate there is
    none_converged = screening.Screened({}, [0, 1], {0: _band(0.2, False), 1: _band(0.15, False)})
    assert none_converged.lowest() == 1
    assert screening.Screened({}, [0, 1], {0: None}).lowest() is None
