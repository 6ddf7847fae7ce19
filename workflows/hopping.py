"""Minima hopping with active learning (thesis §3.4.3), shared by the exploration workflow (adsorbates on a
slab, many starts) and the nmr workflow (§5.3.1: the minima of a molecule or cluster).

rounds        every start's `minimahopping` task at once; with a Campaign, a search whose MD or relaxation
              breaches σ_thr stops at that configuration (the task's `breaching`)
label, refit  the breaching configurations are labelled with the campaign's reference and the model refitted
              on the campaign's labels plus these (Campaign.label, Campaign.retrain)
continue      each interrupted start goes on from its last minimum, at the temperature its search had reached,
              with the hops and minima it has left, round after round; the last allowed round hops to the end
              without the interrupt and counts the searches whose σ went above σ_thr. Without a Campaign there
              is one such round: σ is only monitored.
relax again   minima found with a superseded model are relaxed again with the final one and their σ read with
              it, so that every energy compared afterwards is the final model's
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from concurrent.futures import wait
from dataclasses import dataclass, field

from ase import Atoms

from reactforge.engine.futures import settled
from reactforge.schemas.tasks import EvaluateSpec, MinimaHoppingSpec, ModelRef, OptimiseSpec

from .active_learning import BlockReport, Campaign

HOPPING_CRITERION = "searches above σ_thr in a round = 0"


@dataclass
class Start:
    """One start's search across active-learning rounds: where it continues from, the hops done, and the
    minima found, each with the model that found it."""

    origin: Atoms
    hops: int = 0
    found: list[tuple[Atoms, float, float, ModelRef]] = field(default_factory=list)
    breaches: int = 0
    failed: bool = False
    origin_found: bool = False  # the origin is one of `found` (a continued search records it again first)
    temperature_K: float | None = None  # where the last search's adaptive temperature stopped
    refound: int = 0  # minima in `found` that are a continued search's origin recorded again

    def minima_left(self, n_minima: int) -> int:
        return n_minima - (len(self.found) - self.refound)


# spec(model, seed, hops, n_minima, sigma_thr_eV or None for no interrupt, T0_K or None for the protocol's)
# -> the round's task spec
SpecFor = Callable[[ModelRef, int, int, int, "float | None", "float | None"], MinimaHoppingSpec]


def hop_rounds(engine, progress, starts: dict[Hashable, Start], *, model: ModelRef, spec: SpecFor,
               seed: Callable[[Hashable, int], int], max_hops: int, n_minima: int, sigma_thr_eV: float,
               campaign: Campaign | None, max_iterations: int, report: BlockReport, block: str) -> ModelRef:
    """Minima hopping from every start (keys `(name, index)`), learning on the way when `campaign` is given:
    at most `max_iterations` refits. The starts are updated in place, `report` gets a history row per round;
    returns the final model. Decisions read the results in start order."""
    learn = campaign is not None
    pending = list(starts)
    for iteration in range(max_iterations + 1):
        last = not learn or iteration == max_iterations
        progress.set_stage(f"{block}: minima hopping, round {iteration}, {len(pending)} of {len(starts)} starts")
        # a continued search first relaxes its origin and records it again: that minimum is not counted
        futures = {key: engine.submit(spec(model, seed(key, iteration), max(max_hops - starts[key].hops, 1),
                                           max(starts[key].minima_left(n_minima) + starts[key].origin_found, 1),
                                           None if last else sigma_thr_eV, starts[key].temperature_K),
                                      [starts[key].origin]) for key in pending}
        wait(futures.values())
        breached = []
        for key, f in futures.items():
            start, r = starts[key], settled(f)
            if r is None:
                start.failed = True
                progress.log(f"{key[0]}: minima hopping from start {key[1]} failed: {f.exception()}")
                continue
            start.hops += r.hops
            start.temperature_K = r.temperature_K
            start.refound += bool(r.minima) and start.origin_found
            start.found += [(m, e, s, model) for m, e, s in zip(r.minima, r.energies_eV, r.sigma_per_minimum_eV)]
            if r.breaching is not None:
                breached.append((key, r.breaching))
                start.breaches += 1
                if r.minima:
                    start.origin, start.origin_found = r.minima[-1], True
        results = [r for r in map(settled, futures.values()) if r is not None]
        # the last round searches to the end: its breaches are those whose σ went above σ_thr
        above = len(breached) if not last else sum((r.max_sigma_eV or 0.0) > sigma_thr_eV for r in results)
        worst = max((r.max_sigma_eV or 0.0 for r in results), default=None)
        report.iterations = iteration
        report.criterion_value = float(above)
        report.history.append({"iteration": iteration, "searches": len(pending), "breached": above,
                               "max_sigma_eV": worst, "interrupted": not last, "model": model.sha256})
        progress.log(f"{block} round {iteration}: {above} of {len(pending)} searches above σ_thr = "
                     f"{sigma_thr_eV * 1000:g} meV" + (f"; max σ {worst * 1000:.1f} meV" if worst else ""))
        if not above:
            report.termination_met = not any(s.failed for s in starts.values())
            break
        if last:
            break
        labels = campaign.label([a for _, a in breached], block=block, iteration=iteration + 1,
                                reason="minima hopping σ breach")
        campaign.wait_labels()
        report.count(labels)
        model = campaign.retrain(f"{block}-{iteration + 1}")
        pending = [key for key, _ in breached if starts[key].hops < max_hops and starts[key].minima_left(n_minima) > 0]
        if not pending:
            break
    return model


def relax_again(engine, progress, starts: dict[Hashable, Start], model: ModelRef, *, fixed_atoms: list[int],
                fmax_eV_per_A: float, max_steps: int, report: BlockReport, block: str) -> None:
    """Minima found before the last refit are relaxed again with the final model (one `optimise` task each)
    and their σ read with it (one `evaluate`), so that every energy and σ compared afterwards is the final
    model's; a minimum that cannot be relaxed is dropped (and logged)."""
    stale = [(key, i) for key, s in starts.items() for i, (_, _, _, m) in enumerate(s.found)
             if m.sha256 != model.sha256]
    if report.history:
        report.history[-1]["minima_relaxed_again"] = len(stale)
    if not stale:
        return
    progress.set_stage(f"{block}: {len(stale)} minima relaxed again with the final model")
    spec = OptimiseSpec(model=model, fixed_atoms=fixed_atoms, fmax_eV_per_A=fmax_eV_per_A, max_steps=max_steps)
    futures = [engine.submit(spec, [starts[key].found[i][0]]) for key, i in stale]
    wait(futures)
    relaxed = [(key, i, settled(f)) for (key, i), f in zip(stale, futures)]
    ok = [(key, i, r) for key, i, r in relaxed if r is not None]
    sigma = settled(engine.submit(EvaluateSpec(model=model), [r.final for _, _, r in ok])) if ok else None
    for j, (key, i, r) in enumerate(ok):
        s = max(sigma.sigma_per_atom_eV[j]) if sigma is not None else r.max_sigma_eV
        starts[key].found[i] = (r.final, r.energy_eV, s, model)
    dropped = {(key, i) for key, i, r in relaxed if r is None}
    for key, i in sorted(dropped):
        progress.log(f"{key[0]}: minimum {i} of start {key[1]} could not be relaxed with the final model")
    for key, s in starts.items():
        s.found = [m for i, m in enumerate(s.found) if (key, i) not in dropped]
