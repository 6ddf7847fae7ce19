"""The active-learning loop of thesis Fig. 3.3b: simulate -> sample -> label -> retrain.

A Campaign holds what every block shares: the engine, the store, the reference, the model spec and
the current model. Blocks call `label` (reference single points, stored the moment each finishes; it
returns a `Labels` whose counts the block reads once they are settled), `retrain` and `md_block`
(blocks 1-4: MD until a full run never breaches σ_thr). Each block builds and returns its own
`BlockReport`.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import numpy as np
from ase import Atoms

from reactforge.engine.futures import settled, then
from reactforge.schemas.results import SinglePointResult
from reactforge.schemas.tasks import MDSpec, ModelRef, SinglePointSpec, TrainSpec

# MD seeds are SEED_STRIDE × protocol seed + 1000 × iteration + run index: seed 0 keeps its old
# trajectories, and another protocol seed shares none of them
SEED_STRIDE = 1_000_000

MD_CRITERION = "max per-atom σ over full MD runs (eV) < σ_thr"


class Stored(NamedTuple):
    """A label in the store: its reference result, and whether it is new to this campaign (a structure
    labelled twice, or a task shared by two submissions, counts once)."""

    result: SinglePointResult
    new: bool


@dataclass(frozen=True)
class Labels:
    """The reference labels of one `Campaign.label` call. Each future resolves to `Stored` once its label
    is in the store, or raises TaskFailed (the label is discarded). The counts wait for them."""

    futures: tuple[Future, ...] = ()

    def wait(self) -> Labels:
        wait(self.futures)
        return self

    @property
    def calls(self) -> int:
        return len(self.futures)

    @property
    def added(self) -> int:
        return sum(1 for s in self._settled() if s is not None and s.new)

    @property
    def failed(self) -> int:
        return sum(1 for s in self._settled() if s is None)

    def results(self) -> list[SinglePointResult | None]:
        """Reference results in submission order; None where the label was discarded."""
        return [s.result if s is not None else None for s in self._settled()]

    def _settled(self) -> list[Stored | None]:
        return [settled(f) for f in self.futures]


@dataclass
class BlockReport:
    """What summary.json says of one block."""

    name: str
    criterion: str
    iterations: int = 0
    labels_added: int = 0
    reference_calls: int = 0
    labels_failed: int = 0
    termination_met: bool = False
    criterion_value: float | None = None
    history: list[dict] = field(default_factory=list)  # per iteration: criterion value, labels, model
    breach_trace: dict | None = None  # σ trace of the first MD that breached (thesis Fig. 3.2)

    def count(self, *labels: Labels) -> None:
        """Add labels' calls, additions and failures to this block's (waits for them to settle)."""
        for batch in labels:
            self.reference_calls += batch.calls
            self.labels_added += batch.added
            self.labels_failed += batch.failed

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def status_line(self, max_iterations: int) -> str:
        """What the log says after an iteration: the criterion (with its target) against its value now."""
        value = "–" if self.criterion_value is None else f"{self.criterion_value:.3g}"
        return (f"{self.name} iteration {self.iterations} of {max_iterations}: {self.criterion}; now {value}: "
                f"{'met' if self.termination_met else 'not met'}, {self.labels_added} labels so far")


class Campaign:
    def __init__(self, engine, store, progress, reference, model_spec, *, max_force_eV_per_A: float = 50.0,
                 seed: int = 0):
        self.engine = engine
        self.store = store
        self.progress = progress
        self.reference = reference
        self.model_spec = model_spec
        self.max_force_eV_per_A = max_force_eV_per_A
        self.seed = seed  # offsets every MD thermostat seed: another seed, another independent run
        self.model: ModelRef | None = None
        self._in_flight: list[Future] = []  # stored-label futures not yet waited for
        # task keys of this campaign's labels: training uses exactly these, so a resumed run replays
        # the same fits even when the store already holds labels of later blocks
        self.labelled: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ labelling
    def label(self, structures: list[Atoms], *, block: str, iteration: int, reason: str,
              energy_weight: float = 1.0, force_weight: float = 1.0, config_type: str | None = None,
              reference=None) -> Labels:
        """Submit reference single points; each label is stored as soon as its calculation succeeds.
        `reference`: other settings of the campaign's reference for these (neutral isolated atoms of a
        charged molecule's E0s)."""
        spec = SinglePointSpec(reference=reference or self.reference, max_force_eV_per_A=self.max_force_eV_per_A)
        provenance = dict(block=block, iteration=iteration, reason=reason, energy_weight=energy_weight,
                          force_weight=force_weight, config_type=config_type)
        futures = []
        for atoms in structures:
            fut = self.engine.submit(spec, [atoms])
            futures.append(then(fut, partial(self._store_label, key=fut.key, provenance=provenance)))
        with self._lock:
            self._in_flight.extend(futures)
        return Labels(tuple(futures))

    def _store_label(self, f: Future, *, key: str, provenance: dict) -> Stored:
        """Runs in the thread that finished the reference call."""
        if f.exception() is not None:
            self.progress.log(f"label discarded: {f.exception()}")
            f.result()  # re-raises TaskFailed for whoever waits on the label
        self.store.add_label(f.result(), task=key, **provenance)
        with self._lock:
            new = key not in self.labelled
            self.labelled.add(key)
        return Stored(f.result(), new)

    def wait_labels(self) -> None:
        with self._lock:
            in_flight = self._in_flight
        wait(in_flight)
        with self._lock:
            self._in_flight = [f for f in self._in_flight if not f.done()]

    def import_labels(self, run_dir) -> int:
        """A finished run's labels join this run's labels database (provenance kept, `source_run` added) and
        this campaign's training set: a workflow that goes on from that run (free energy, exploration)
        refits them with its own, as the run's next iteration would. Returns how many."""
        from ase.constraints import FixAtoms

        from reactforge.engine.store import Store

        labels = Store(run_dir).training_set()
        for a in labels:
            plain = Atoms(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc)
            plain.set_constraint([c.copy() for c in a.constraints if isinstance(c, FixAtoms)])
            stress = a.info.get("REF_stress")
            result = SinglePointResult(atoms=plain, energy_eV=float(a.info["REF_energy"]),
                                       forces_eV_per_A=np.asarray(a.arrays["REF_forces"]).tolist(),
                                       stress_eV_per_A3=None if stress is None else np.asarray(stress).tolist(),
                                       reference=str(a.info.get("reference", "")))
            self.store.add_label(result, block=a.info["block"], iteration=a.info["iteration"], reason=a.info["reason"],
                                 task=a.info["task"], energy_weight=a.info.get("energy_weight", 1.0),
                                 force_weight=a.info.get("force_weight", 1.0), config_type=a.info.get("config_type"),
                                 extra={"source_run": str(run_dir)})
            self.labelled.add(a.info["task"])
        return len(labels)

    # ------------------------------------------------------------------ training
    def training_set(self, labelled: set[str] | None = None) -> list[Atoms]:
        """The labels whose task keys are in `labelled` (default: the campaign's). The store's order is fixed by
        content (task key), not by which reference call finished first: a fit's input depends only on what was
        labelled."""
        keys = self.labelled if labelled is None else labelled
        return [a for a in self.store.training_set() if a.info["task"] in keys]

    def keep(self, model: ModelRef, name: str) -> ModelRef:
        """A fitted model with its files kept in models/<name>/."""
        return model.model_copy(update={"paths": self.store.keep_model(model.paths, name)})

    def retrain(self, name: str) -> ModelRef:
        """Fit the model to everything labelled so far (waits for labels in flight)."""
        self.wait_labels()
        training = self.training_set()
        self.progress.set_stage(f"{name}: training on {len(training)} configurations")
        self.model = self.keep(self.engine.run(TrainSpec(model=self.model_spec), training).model, name)
        spec = self.model_spec
        self.store.export_dataset(sigmas=(spec.sigma_energy_eV, spec.sigma_force_eV_per_A, spec.sigma_virial_eV)
                                  if spec.model == "gap" else None)
        return self.model

    # ------------------------------------------------------------------ MD blocks (1-4)
    def md_block(self, name: str, structures: list[Atoms], md: dict, max_iterations: int) -> BlockReport:
        """Iterate MD on every structure until no run breaches σ_thr (thesis blocks 1-4).

        `md` holds MDSpec fields other than the model (steps, temperature_K, sigma_thr_eV, ...).
        Breaching configurations are labelled the moment their MD ends; runs that never breach
        contribute their highest-σ configuration (thesis §3.2) unless every run was clean.
        """
        report = BlockReport(name, criterion=MD_CRITERION)  # what a block of no rounds reports
        for report in self.md_rounds(name, structures, md, max_iterations):
            pass
        return report

    def md_rounds(self, name: str, structures: list[Atoms], md: dict,
                  max_iterations: int) -> Iterator[BlockReport]:
        """`md_block` one round at a time: yields the block's report (one object, updated) after each
        round, once the round's labels are stored and counted; asking for the next round retrains on
        them first."""
        report = BlockReport(name, criterion=MD_CRITERION)
        if self.model is None:
            self.retrain(f"{name}-0")
        for iteration in range(1, max_iterations + 1):
            self.progress.set_stage(f"{name}: iteration {iteration} of {max_iterations}, MD on {len(structures)} "
                                    "structures")
            runs = [self.engine.submit(MDSpec(model=self.model, seed=SEED_STRIDE * self.seed + 1000 * iteration + i,
                                              **md), [atoms])
                    for i, atoms in enumerate(structures)]
            # a breaching configuration is labelled the moment its MD ends
            breach_labels = [then(f, partial(self._label_breach, name=name, iteration=iteration)) for f in runs]
            wait(breach_labels)
            results = [r for r in map(settled, runs) if r is not None]
            breached = [r for r in results if r.breached]
            worst = max((r.max_sigma_eV for r in results), default=float("nan"))
            if breached and report.breach_trace is None:
                r = breached[0]
                report.breach_trace = {"steps": r.trace_steps, "sigma_eV": r.sigma_trace_eV,
                                       "symbols": r.sampled.get_chemical_symbols(),
                                       "sigma_thr_eV": md.get("sigma_thr_eV", 0.05), "iteration": iteration}
            report.iterations = iteration
            report.criterion_value = worst
            report.history.append({"iteration": iteration, "max_sigma_eV": worst, "breached": len(breached),
                                   "runs": len(results), "training_set": self.store.count()})
            if results and not breached and len(results) == len(runs):
                report.termination_met = True
                self.progress.log(report.status_line(max_iterations))
                yield report
                return
            clean = self.label([r.sampled for r in results if not r.breached], block=name, iteration=iteration,
                               reason="highest uncertainty")
            self.wait_labels()
            report.count(*[labels for labels in (f.result() for f in breach_labels) if labels], clean)
            self.progress.log(report.status_line(max_iterations))
            yield report
            self.retrain(f"{name}-{iteration}")

    def _label_breach(self, f: Future, *, name: str, iteration: int) -> Labels | None:
        """Runs in the thread that finished the MD: the breaching configuration's label, if it breached."""
        if f.exception() is not None:
            self.progress.log(f"{name}: MD failed: {f.exception()}")
            return None
        r = f.result()
        if not r.breached:
            return None
        return self.label([r.sampled], block=name, iteration=iteration, reason="threshold breach")
