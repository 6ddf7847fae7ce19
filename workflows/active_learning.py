"""The active-learning loop of thesis Fig. 3.3b: simulate -> sample -> label -> retrain.

A Campaign holds what every block shares: the engine, the store, the reference, the model spec and
the current model. Blocks call `label` (reference single points, stored the moment each finishes),
`retrain` and `md_block` (blocks 1-4: MD until a full run never breaches σ_thr).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, wait
from dataclasses import dataclass, field

from ase import Atoms

from reactforge.schemas.tasks import MDSpec, ModelRef, SinglePointSpec, TrainSpec

# MD seeds are SEED_STRIDE × protocol seed + 1000 × iteration + run index: seed 0 keeps its old
# trajectories, and another protocol seed shares none of them
SEED_STRIDE = 1_000_000


def then(fut: Future, fn) -> Future:
    """A future resolved after `fn(fut)` has run: wait on this, not on `fut`, when `fn` submits more
    work (a plain done-callback may still be running when waiters on `fut` wake up)."""
    out: Future = Future()

    def callback(f: Future):
        try:
            out.set_result(fn(f))
        except BaseException as err:  # noqa: BLE001 - handed to the waiter
            out.set_exception(err)

    fut.add_done_callback(callback)
    return out


def canonical_order(configs: list) -> list:
    """The training set in an order fixed by its content (the labelling task's key), not by which
    reference call happened to finish first: the fit's input then depends only on what was labelled,
    and an active-learning run amplifies any difference between two fits into different samples."""
    return sorted(configs, key=lambda a: a.info["task"])


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

    def as_dict(self) -> dict:
        return dict(self.__dict__)


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
        self._labels: list[Future] = []
        # task keys of this campaign's labels: training uses exactly these, so a resumed run replays
        # the same fits even when the store already holds labels of later blocks
        self.labelled: set[str] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ labelling
    def label(self, structures: list[Atoms], *, block: str, iteration: int, reason: str,
              energy_weight: float = 1.0, force_weight: float = 1.0, config_type: str | None = None,
              report: BlockReport | None = None) -> list[Future]:
        """Submit reference single points; each label is stored as soon as its calculation succeeds."""
        spec = SinglePointSpec(reference=self.reference, max_force_eV_per_A=self.max_force_eV_per_A)
        futures = []
        for atoms in structures:
            fut = self.engine.submit(spec, [atoms])
            key = fut.key

            def store(f: Future, key=key):
                if f.exception() is not None:
                    if report is not None:
                        report.labels_failed += 1
                    self.progress.log(f"label discarded: {f.exception()}")
                    return f.result()  # re-raises TaskFailed for whoever waits on the label
                self.store.add_label(f.result(), block=block, iteration=iteration, reason=reason, task=key,
                                     energy_weight=energy_weight, force_weight=force_weight,
                                     config_type=config_type)
                with self._lock:
                    new = key not in self.labelled
                    self.labelled.add(key)
                if report is not None and new:
                    report.labels_added += 1
                return f.result()

            if report is not None:
                report.reference_calls += 1
            futures.append(then(fut, store))  # resolves once the label is in the store
        self._labels.extend(futures)
        return futures

    def wait_labels(self) -> None:
        wait(self._labels)
        self._labels = [f for f in self._labels if not f.done()]

    # ------------------------------------------------------------------ training
    def retrain(self, name: str) -> ModelRef:
        """Fit the model to everything labelled so far (waits for labels in flight)."""
        self.wait_labels()
        training = canonical_order([a for a in self.store.training_set() if a.info["task"] in self.labelled])
        self.progress.set_stage(f"{name}: training on {len(training)} configurations")
        result = self.engine.run(TrainSpec(model=self.model_spec), training)
        kept = self.store.keep_model(result.model.paths, name)
        self.model = result.model.model_copy(update={"paths": kept})
        self.store.export_dataset()
        return self.model

    # ------------------------------------------------------------------ MD blocks (1-4)
    def md_block(self, name: str, structures: list[Atoms], md: dict, max_iterations: int,
                 report: BlockReport | None = None) -> BlockReport:
        """Iterate MD on every structure until no run breaches σ_thr (thesis blocks 1-4).

        `md` holds MDSpec fields other than the model (steps, temperature_K, sigma_thr_eV, ...).
        Breaching configurations are labelled the moment their MD ends; runs that never breach
        contribute their highest-σ configuration (thesis §3.2) unless every run was clean.
        """
        report = report or BlockReport(name, criterion="max per-atom σ over full MD runs (eV) < σ_thr")
        if self.model is None:
            self.retrain(f"{name}-0")
        for iteration in range(report.iterations + 1, max_iterations + 1):
            self.progress.set_stage(f"{name}: iteration {iteration} MD on {len(structures)} structures")
            clean: list = []

            def on_md(f: Future, iteration=iteration):
                if f.exception() is not None:
                    self.progress.log(f"{name}: MD failed: {f.exception()}")
                    return
                r = f.result()
                if r.breached:
                    if report.breach_trace is None:
                        report.breach_trace = {"steps": r.trace_steps, "sigma_eV": r.sigma_trace_eV,
                                               "symbols": r.sampled.get_chemical_symbols(),
                                               "sigma_thr_eV": md.get("sigma_thr_eV", 0.05),
                                               "iteration": iteration}
                    self.label([r.sampled], block=name, iteration=iteration, reason="threshold breach",
                               report=report)
                else:
                    clean.append(r)

            futures, handled = [], []
            for i, atoms in enumerate(structures):
                spec = MDSpec(model=self.model, seed=SEED_STRIDE * self.seed + 1000 * iteration + i, **md)
                fut = self.engine.submit(spec, [atoms])
                handled.append(then(fut, on_md))
                futures.append(fut)
            wait(handled)
            results = [f.result() for f in futures if f.exception() is None]
            breached = [r for r in results if r.breached]
            worst = max((r.max_sigma_eV for r in results), default=float("nan"))
            report.iterations = iteration
            report.criterion_value = worst
            report.history.append({"iteration": iteration, "max_sigma_eV": worst, "breached": len(breached),
                                   "runs": len(results), "training_set": self.store.count()})
            if results and not breached and len(results) == len(futures):
                report.termination_met = True
                break
            self.label([r.sampled for r in clean], block=name, iteration=iteration, reason="highest uncertainty",
                       report=report)
            self.retrain(f"{name}-{iteration}")
        return report

