"""Fine-tuning a foundation model by iterative training (thesis chapter 4, Fig. 4.3a), read beside it.

sample        MD with the foundation model (later: the fine-tuned one) on every structure at every
              temperature, all trajectories at once, without the σ interrupt: the sampler is a single model
              file, whose σ is zero, so MDSpec's σ_thr never stops it (thesis §4.3: "having a threshold for
              interrupting molecular dynamics is almost superfluous"). A trajectory is a chain of `md`
              tasks; each segment's last frame is a candidate.
uncertainty   after the fact, in parallel (one `evaluate` task per trajectory): a frame's uncertainty is
              the largest per-atom force spread (eV/Å; RMS over components of the std across models) of
              a committee of models fine-tuned from the foundation with different seeds. mace_run_train
              draws its validation frame(s) by seed, so the members also fit different subsets of the
              labels. Forces, not energies: they are what the held-out RMSE measures, and a committee that
              starts from one set of foundation weights differs in forces before its energies part.
first labels  iteration 1 has no labels: `initial_labels` frames of the foundation's MD chosen by FPS on
              average SOAP (diverse, no model needed) are labelled and a small committee fine-tuned on
              them. Its members start from the same weights and saw the same few frames, so their spread
              alone is small and uninformative; iteration 1's committee is therefore the foundation plus
              those members: their disagreement is large where the labels moved the forces, i.e. where
              the foundation is wrong. Later iterations use the fine-tuned committee alone.
selection     the `candidates` (M, default 3K) most uncertain frames not labelled yet, then FPS on their
              average SOAP to K, started from the most uncertain: K frames the committee disagrees on, not
              K near-identical neighbours of one MD frame.
fine-tune     mace_run_train `--foundation_model` (tasks/training/mace.py), all labels so far, every
              member: naive fine-tuning of all weights, or mace's multi-head replay of the foundation's
              own data where the user gives it (`training.replay_file`)
held-out      per iteration, MD of the new fine-tuned model (member 0, fresh seeds) labelled with the
              reference, in finetune/held_out-<i>.xyz: never in labels.db, so neither a fit nor
              dataset.xyz sees it. Foundation and fine-tuned committee (mean) are evaluated on it.
output        summary.json `finetune` (per iteration labels, held-out force and energy RMSE of both
              models, the ratio, and how well the committee's σ ranks the fine-tuned model's errors),
              report/finetune_parity.png (Fig. 4.3b, c: 2-D histograms of force parity, log colour)
"""
from __future__ import annotations

from concurrent.futures import wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read

from reactforge.engine.futures import settled
from reactforge.schemas.tasks import EvaluateSpec, MACEModelSpec, MDSpec, ModelRef, SinglePointSpec

from . import sampling
from .active_learning import SEED_STRIDE, Campaign

BLOCK = "finetune"  # the labels' block name


@dataclass(frozen=True)
class Trajectory:
    """One MD chain: a start structure at one temperature."""

    name: str
    start: Atoms
    temperature_K: float
    fixed: tuple[int, ...]


# ---------------------------------------------------------------------------------------------- selection


def select(uncertainty: np.ndarray, distances: np.ndarray, k: int, candidates: int,
           exclude: set[int] | frozenset = frozenset()) -> list[int]:
    """Indices of k frames: the `candidates` most uncertain (excluding `exclude`), thinned by farthest-point
    sampling on `distances` (frames × frames) starting from the most uncertain of them."""
    order = [int(i) for i in np.argsort(-np.asarray(uncertainty), kind="stable") if int(i) not in exclude]
    pool = order[:max(candidates, k)]
    if not pool:
        return []
    sub = np.asarray(distances)[np.ix_(pool, pool)]
    return [pool[j] for j in sampling.farthest_point_sampling(sub, k, first=0)]


def force_spread(sigma_per_atom: list[list[float]]) -> np.ndarray:
    """A frame's uncertainty: its largest per-atom force σ."""
    return np.array([max(s) for s in sigma_per_atom])


# ---------------------------------------------------------------------------------------------- errors


def rmse(frames: list[Atoms], energies: list[float], forces: list) -> dict:
    """Force-component RMSE (eV/Å) and per-atom energy RMSE (meV/atom) against the frames' REF_ labels; the
    mean per-atom energy error beside it (another reference's energy zero shows there, not in the forces)."""
    df = np.concatenate([(np.asarray(f) - a.arrays["REF_forces"]).ravel() for a, f in zip(frames, forces)])
    de = np.array([(e - a.info["REF_energy"]) / len(a) for a, e in zip(frames, energies)])
    return {"force_rmse_eV_per_A": float(np.sqrt(np.mean(df ** 2))),
            "energy_rmse_meV_per_atom": 1e3 * float(np.sqrt(np.mean(de ** 2))),
            "energy_mean_error_meV_per_atom": 1e3 * float(de.mean())}


def frame_errors(frames: list[Atoms], forces: list) -> np.ndarray:
    """Per frame, the largest per-atom force error (eV/Å): what a per-atom σ should rank."""
    return np.array([np.linalg.norm(np.asarray(f) - a.arrays["REF_forces"], axis=1).max()
                     for a, f in zip(frames, forces)])


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3:
        return None
    from scipy.stats import spearmanr

    value = spearmanr(x, y).statistic
    return None if not np.isfinite(value) else float(value)


# ---------------------------------------------------------------------------------------------- sources


def read_starts(protocol) -> tuple[list[tuple[str, Atoms, tuple[int, ...]]], object]:
    """(name, structure, fixed atoms) of every start, and the reference: the files' frames (their FixAtoms
    held in MD), or a catalysis run's site slab and intermediates (its fixed bottom) and its reference."""
    from reactforge.schemas.loading import load_protocol
    from reactforge.schemas.protocol import Protocol

    from .catalysis_build import build_system, fixed_indices

    if protocol.structures is not None:
        starts = []
        for name in protocol.structures:
            path = protocol.resolve(name)
            if not path.is_file():
                raise ValueError(f"structures: no such file {path}")
            for k, atoms in enumerate(read(path, ":")):
                starts.append((f"{Path(name).stem}" + (f"[{k}]" if k else ""), atoms, tuple(fixed_indices(atoms))))
        return starts, protocol.reference
    run_dir = protocol.resolve(protocol.run)
    path = run_dir / "protocol.yaml"
    if not path.is_file():
        raise ValueError(f"run: no catalysis protocol {path} (is 'run' a run directory?)")
    catalysis = load_protocol(path, Protocol)
    system = build_system(catalysis)
    fixed = tuple(fixed_indices(system.site_slab))
    starts = [("site slab", system.site_slab, fixed)] + [(n, a, fixed) for n, a in system.intermediates.items()]
    return starts, protocol.reference or catalysis.reference


def foundation_ref(protocol) -> ModelRef:
    from reactforge.engine.store import Store

    path = protocol.resolve(protocol.foundation_model)
    if not path.is_file():
        raise ValueError(f"foundation_model: no such file {path} (a MACE .model file; nothing is downloaded)")
    return Store.model_ref("mace", [path.resolve()], "forces")


def model_spec(protocol) -> MACEModelSpec:
    """The committee every fit makes: fine-tuned from the foundation (architecture and r_max are its)."""
    t, s = protocol.training, protocol.selection
    replay = str(protocol.resolve(t.replay_file).resolve()) if t.replay_file else None
    return MACEModelSpec(committee_size=s.committee_size, foundation_model=str(protocol.resolve(protocol.foundation_model).resolve()),
                         replay_file=replay, max_num_epochs=t.max_num_epochs, lr=t.lr, batch_size=t.batch_size,
                         energy_weight=t.energy_weight, forces_weight=t.forces_weight, patience=t.patience,
                         ema_decay=t.ema_decay, stage_two_start_epoch=None, default_dtype=t.default_dtype,
                         uncertainty="forces")


def plan(protocol) -> list[str]:
    foundation = foundation_ref(protocol)
    starts, reference = read_starts(protocol)
    if protocol.training.replay_file and not protocol.resolve(protocol.training.replay_file).is_file():
        raise ValueError(f"training.replay_file: no such file {protocol.resolve(protocol.training.replay_file)}")
    sm, sel, t, h = protocol.sampling, protocol.selection, protocol.training, protocol.held_out
    n_traj = len(starts) * len(sm.temperatures_K)
    k = sel.labels_per_iteration
    return [f"foundation model {foundation.paths[0]}",
            (f"sampling: {len(starts)} structure(s) ({', '.join(n for n, _, _ in starts)}) × "
             f"{', '.join(f'{T:g}' for T in sm.temperatures_K)} K = {n_traj} trajectories of {sm.steps} steps, "
             f"{sm.snapshots} frames each, no σ interrupt"),
            (f"selection: iteration 1 starts from {sel.initial_labels} FPS frames; then the "
             f"{sel.candidates or 3 * k} most uncertain frames (force spread of the foundation and "
             f"{sel.committee_size} fine-tuned members; later the members alone), FPS to {k} labels per iteration"),
            f"reference: {reference.code}",
            (f"fine-tuning: mace_run_train --foundation_model, {sel.committee_size} seeds, ≤ {t.max_num_epochs} epochs, "
             + ("replay of " + t.replay_file if t.replay_file else "naive (all weights, labels only)")),
            f"held-out: {h.snapshots} frames per trajectory of each fine-tuned model's MD, labelled, never trained on",
            f"iterations: {protocol.iterations}"]


def run(protocol, engine, store, progress) -> dict:
    return Finetune(protocol, engine, store, progress).run()


class Finetune:
    def __init__(self, protocol, engine, store, progress):
        self.p, self.engine, self.store, self.progress = protocol, engine, store, progress
        self.foundation = foundation_ref(protocol)
        starts, self.reference = read_starts(protocol)
        self.trajectories = [Trajectory(n, a, T, fixed) for n, a, fixed in starts for T in protocol.sampling.temperatures_K]
        self.elements = sorted({s for _, a, _ in starts for s in a.get_chemical_symbols()})
        self.campaign = Campaign(engine, store, progress, self.reference, model_spec(protocol),
                                 max_force_eV_per_A=protocol.max_force_eV_per_A, seed=protocol.seed)

    # ------------------------------------------------------------------ sampling
    def sample(self, model: ModelRef, snapshots: int, steps: int, seed: int) -> list[tuple[int, Atoms]]:
        """(trajectory index, frame) of every trajectory's `snapshots` segment ends, all trajectories advanced
        together one segment at a time. A failed segment ends its trajectory."""
        sm = self.p.sampling
        segment = max(1, steps // snapshots)
        current = {i: t.start for i, t in enumerate(self.trajectories)}
        frames = []
        for s in range(snapshots):
            self.progress.set_stage(f"finetune: MD segment {s + 1} of {snapshots} on {len(current)} trajectories")
            futures = {i: self.engine.submit(MDSpec(
                model=model, temperature_K=self.trajectories[i].temperature_K, timestep_fs=sm.timestep_fs,
                steps=segment, friction_per_fs=sm.friction_per_fs, check_every=segment,
                fixed_atoms=list(self.trajectories[i].fixed), seed=seed + 1000 * i + s), [a])
                for i, a in current.items()}
            wait(futures.values())
            for i, f in futures.items():
                r = settled(f)
                if r is None:
                    self.progress.log(f"finetune: MD of {self.trajectories[i].name} stopped: {f.exception()}")
                    del current[i]
                    continue
                current[i] = r.final
                frame = r.final.copy()
                frame.set_constraint()  # labels and errors on every atom; MD alone holds the fixed ones
                frames.append((i, frame))
        return sorted(frames, key=lambda x: x[0])

    def _seed(self, iteration: int, held_out: bool) -> int:
        return SEED_STRIDE * self.p.seed + 100_000 * (2 * iteration + held_out)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, model: ModelRef, frames: list[tuple[int, Atoms]]):
        """Energies, forces and per-atom σ of every frame, one `evaluate` task per trajectory (in parallel)."""
        groups: dict[int, list[int]] = {}
        for j, (i, _) in enumerate(frames):
            groups.setdefault(i, []).append(j)
        futures = {i: self.engine.submit(EvaluateSpec(model=model), [frames[j][1] for j in js]) for i, js in groups.items()}
        energies, forces, sigma = [None] * len(frames), [None] * len(frames), [None] * len(frames)
        for i, js in groups.items():
            r = futures[i].result()
            for j, e, f, s in zip(js, r.energies_eV, r.forces_eV_per_A, r.sigma_per_atom_eV):
                energies[j], forces[j], sigma[j] = e, f, s
        return energies, forces, sigma

    def distances(self, frames: list[tuple[int, Atoms]]) -> np.ndarray:
        sel = self.p.selection
        vectors = sampling.average_soap([a for _, a in frames], self.elements, cutoff_A=sel.soap_cutoff_A,
                                        l_max=sel.soap_l_max, n_max=sel.soap_n_max, atom_sigma_A=sel.soap_atom_sigma_A)
        return sampling.soap_distances(vectors)

    # ------------------------------------------------------------------ labels
    def label(self, frames: list[Atoms], iteration: int, reason: str) -> int:
        labels = self.campaign.label(frames, block=BLOCK, iteration=iteration, reason=reason)
        self.campaign.wait_labels()
        return labels.added

    def held_out(self, frames: list[tuple[int, Atoms]], iteration: int) -> list[Atoms]:
        """Reference labels of the test frames, written to finetune/held_out-<i>.xyz only (not labels.db)."""
        spec = SinglePointSpec(reference=self.reference, max_force_eV_per_A=self.p.max_force_eV_per_A)
        futures = [self.engine.submit(spec, [a]) for _, a in frames]
        wait(futures)
        out = []
        for (i, _), f in zip(frames, futures):
            r = settled(f)
            if r is None:
                self.progress.log(f"finetune: a held-out label was discarded: {f.exception()}")
                continue
            a = r.atoms.copy()
            a.info.update(REF_energy=r.energy_eV, trajectory=self.trajectories[i].name,
                          temperature_K=self.trajectories[i].temperature_K)
            a.arrays["REF_forces"] = np.asarray(r.forces_eV_per_A, dtype=float)
            out.append(a)
        self.store.write_xyz(f"{BLOCK}/held_out-{iteration}.xyz", out)
        return out

    def seed_labels(self, frames: list[tuple[int, Atoms]], distances: np.ndarray, picked: set[int]) -> int:
        """Iteration 1's first labels: frames in FPS order until `initial_labels` are stored (a discarded
        reference call is replaced by the next frame in that order)."""
        want = self.p.selection.initial_labels
        order = sampling.farthest_point_sampling(distances, len(frames))
        added = 0
        while added < want and len(picked) < len(order):
            batch = order[len(picked):len(picked) + want - added]
            picked.update(batch)
            added += self.label([frames[j][1] for j in batch], 1, "foundation MD, FPS")
        return added

    def committee(self, name: str) -> ModelRef:
        """The committee fine-tuned on every label so far; batches no larger than the frames mace trains on
        (it keeps max(1, 10 %) for validation and drops incomplete batches)."""
        self.campaign.wait_labels()
        n = len(self.campaign.labelled)
        if n < 2:
            raise RuntimeError(f"finetune: {n} label(s); fine-tuning needs at least 2 (one validates)")
        spec = self.campaign.model_spec
        train = n - max(1, int(spec.valid_fraction * n))
        self.campaign.model_spec = spec.model_copy(update={"batch_size": max(1, min(self.p.training.batch_size, train))})
        model = self.campaign.retrain(name)
        return model.model_copy(update={"uncertainty": "forces"})

    def member(self, model: ModelRef) -> ModelRef:
        """The first member alone: the sampler (one file, so σ = 0 and MD is never interrupted)."""
        from reactforge.engine.store import Store

        return Store.model_ref("mace", model.paths[:1], "forces")

    def with_foundation(self, model: ModelRef) -> ModelRef:
        from reactforge.engine.store import Store

        return Store.model_ref("mace", self.foundation.paths + model.paths, "forces")

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        sm, sel, h = self.p.sampling, self.p.selection, self.p.held_out
        k = sel.labels_per_iteration
        sampler, committee, history, parity = self.foundation, None, [], None
        for iteration in range(1, self.p.iterations + 1):
            frames = self.sample(sampler, sm.snapshots, sm.steps, self._seed(iteration, False))
            if not frames:
                raise RuntimeError("finetune: no MD frames (every trajectory failed)")
            distances = self.distances(frames)
            picked: set[int] = set()
            added = 0
            if committee is None:  # iteration 1: FPS seed labels, a committee on them, the foundation beside it
                added += self.seed_labels(frames, distances, picked)
                committee = self.committee(f"{BLOCK}-{iteration}-initial")
                ensemble = self.with_foundation(committee)
            else:
                ensemble = committee
            self.progress.set_stage(f"finetune: iteration {iteration}, uncertainty of {len(frames)} frames")
            _, _, sigma = self.evaluate(ensemble, frames)
            uncertainty = force_spread(sigma)
            chosen = select(uncertainty, distances, k, sel.candidates or 3 * k, exclude=picked)
            added += self.label([frames[j][1] for j in chosen], iteration, "highest force uncertainty")
            committee = self.committee(f"{BLOCK}-{iteration}")
            sampler = self.member(committee)
            test = self.held_out(self.sample(sampler, h.snapshots, h.steps or sm.steps, self._seed(iteration, True)),
                                 iteration)
            row, parity = self.score(test, committee, iteration, uncertainty, chosen, picked)
            row["labels_added"] = added
            history.append(row)
            self.progress.log(f"finetune iteration {iteration}: {row['labels']} labels; held-out force RMSE "
                              f"{row['foundation']['force_rmse_eV_per_A']:.3f} → {row['finetuned']['force_rmse_eV_per_A']:.3f} "
                              f"eV/Å (×{row['ratio']:.2f})")
        self.figure(parity)
        return {"finetune": {"foundation_model": self.foundation.paths[0], "iterations": history,
                             "figure": f"report/{BLOCK}_parity.png"},
                "model": committee.model_dump(mode="json")}

    def score(self, test: list[Atoms], committee: ModelRef, iteration: int, uncertainty, chosen, picked):
        """The iteration's row: labels so far, both models' held-out errors, the ratio, and the Spearman
        correlation between the fine-tuned committee's σ and its own largest force error per frame. The median
        uncertainty is that of the frames the selection chose from (the seed labels excluded)."""
        frames = [(0, a) for a in test]
        e_found, f_found, _ = self.evaluate(self.foundation, frames)
        e_ft, f_ft, s_ft = self.evaluate(committee, frames)
        found, tuned = rmse(test, e_found, f_found), rmse(test, e_ft, f_ft)
        ratio = found["force_rmse_eV_per_A"] / tuned["force_rmse_eV_per_A"] if tuned["force_rmse_eV_per_A"] else None
        row = {"iteration": iteration, "labels": self.store.count(block=BLOCK),
               "held_out_frames": len(test), "foundation": found, "finetuned": tuned, "ratio": ratio,
               "selected_uncertainty_eV_per_A": [float(uncertainty[j]) for j in chosen],
               "median_uncertainty_eV_per_A": float(np.median(np.delete(uncertainty, sorted(picked)))),
               "sigma_error_spearman": spearman(force_spread(s_ft), frame_errors(test, f_ft)),
               "model": committee.sha256}
        ref = np.concatenate([a.arrays["REF_forces"].ravel() for a in test])
        parity = (ref, np.concatenate([np.ravel(f) for f in f_found]), np.concatenate([np.ravel(f) for f in f_ft]),
                  found["force_rmse_eV_per_A"], tuned["force_rmse_eV_per_A"], iteration)
        return row, parity

    # ------------------------------------------------------------------ Fig. 4.3b, c
    def figure(self, parity) -> None:
        """Force parity of the foundation (left) and the fine-tuned model (right) on the last held-out set:
        2-D histograms with a log colour scale, not scatter, so overlapping points are counted."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import LogNorm

        ref, found, tuned, r_found, r_tuned, iteration = parity
        lo, hi = np.percentile(np.concatenate([ref, found, tuned]), [0.5, 99.5])
        pad = 0.05 * (hi - lo)
        edges = np.linspace(lo - pad, hi + pad, 60)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharex=True, sharey=True)
        for ax, pred, title, err in ((axes[0], found, "foundation", r_found), (axes[1], tuned, "fine-tuned", r_tuned)):
            *_, image = ax.hist2d(ref, pred, bins=[edges, edges], norm=LogNorm(), cmap="viridis", cmin=1)
            ax.plot(edges[[0, -1]], edges[[0, -1]], "k--", lw=0.8)
            ax.set_title(f"{title}: force RMSE {err:.3f} eV/Å")
            ax.set_xlabel("reference force component (eV/Å)")
            ax.set_aspect("equal")
            fig.colorbar(image, ax=ax, label="count")
        axes[0].set_ylabel("model force component (eV/Å)")
        fig.suptitle(f"held-out MD frames of the fine-tuned model, iteration {iteration}")
        fig.tight_layout()
        with self.store.atomic_path(f"report/{BLOCK}_parity.png") as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
