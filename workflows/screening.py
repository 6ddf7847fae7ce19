"""Two-stage screening of a reaction's like-atom permutations (block 6, thesis §3.4.3).

Every permutation's band gets a short relaxation without climbing image; only the lowest band, and
any within a margin of it, goes on to the full climbing-image NEB, started from its screened band.
The thesis's "all permutations are screened" holds, but a permutation that makes no sense (two H
passing through each other) no longer runs the whole step budget every iteration.

Every decision reads completed results in permutation order (ties go to the lower index), never the
order in which tasks finished: two runs with one seed choose the same bands.
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial

from ase import Atoms

from reactforge.engine.futures import gather, settled, then

# a permutation whose screened band lies more than the drop margin above the lowest this many
# iterations in a row is screened no more
DROP_AFTER = 2


@dataclass
class Screened:
    """One reaction's permutations in one iteration. Keys are permutation indices."""

    screened_max_eV: dict[int, float | None]  # highest image of each short band (None: failed; {}: no screen)
    full: list[int]  # the permutations given the full climbing-image NEB
    results: dict[int, object] = field(default_factory=dict)  # each permutation's last NEBResult

    def lowest(self) -> int | None:
        """The full NEB with the lowest highest image (the lower index on a tie), converged bands first.

        A climbing band stopped by its step budget has its top image still below the saddle, so its
        highest image underestimates the barrier: compared with converged bands it would win for being
        unfinished (a 91 meV error on one quickstart seed). It is taken only when no band converged."""
        done = [k for k in self.full if self.results.get(k) is not None]
        return min(done, key=lambda k: (not self.results[k].converged, max(self.results[k].energies_eV), k),
                   default=None)


def within_margin(energies: dict[int, float | None], margin_eV: float) -> list[int]:
    """The keys whose energy is within `margin_eV` of the lowest, in key order."""
    finite = {k: e for k, e in energies.items() if e is not None}
    if not finite:
        return []
    low = min(finite.values())
    return sorted(k for k, e in finite.items() if e <= low + margin_eV)


def screen(engine, screen_spec, full_spec, starts: dict[int, list[Atoms]], margin_eV: float) -> Future:
    """A future of `Screened`: with `screen_spec` (a non-climbing NEBSpec with few steps) and more than
    one permutation, the short bands first, then `full_spec` from the screened bands within the
    margin; otherwise the full NEB for each permutation."""
    keys = sorted(starts)
    out: Future = Future()

    def finish(done: Future, screened: dict, chosen: list[int], first: dict):
        results = {**first, **{k: settled(f) for k, f in zip(chosen, done.result())}}
        out.set_result(Screened(screened, chosen, results))

    def second(done: Future):
        first = {k: settled(f) for k, f in zip(keys, done.result())}
        screened = {k: (max(r.energies_eV) if r is not None else None) for k, r in first.items()}
        chosen = within_margin(screened, margin_eV)
        full = [engine.submit(full_spec, first[k].images) for k in chosen]
        then(gather(full), partial(finish, screened=screened, chosen=chosen, first=first)).add_done_callback(failed)

    def failed(f: Future):
        if f.exception() is not None and not out.done():
            out.set_exception(f.exception())

    if screen_spec is None or len(keys) == 1:
        full = [engine.submit(full_spec, starts[k]) for k in keys]
        then(gather(full), partial(finish, screened={}, chosen=keys, first={})).add_done_callback(failed)
    else:
        then(gather([engine.submit(screen_spec, starts[k]) for k in keys]), second).add_done_callback(failed)
    return out


def strikes_after(strikes: dict[int, int], screened: dict[int, float | None], best: int | None,
                  drop_margin_eV: float) -> dict[int, int]:
    """Consecutive iterations each permutation's screened band lay more than the drop margin above the
    lowest screened band; the best path's permutation never counts."""
    low = min((e for e in screened.values() if e is not None), default=None)
    if low is None:
        return dict(strikes)
    return {k: (strikes.get(k, 0) + 1 if e is not None and e > low + drop_margin_eV and k != best else 0)
            for k, e in screened.items()}


def kept(active: Sequence[int], strikes: dict[int, int]) -> list[int]:
    """The permutations still screened: those without DROP_AFTER strikes in a row."""
    return [k for k in active if strikes.get(k, 0) < DROP_AFTER]
