"""The automated catalysis training protocol (thesis §3.3, Fig. 3.3), block by block.

0 initial set -> 1 bulk MD -> 2 surface MD -> 3 adsorbate seed (dimers, placements) + MD
-> 4 adsorbate MD -> 5 geometry optimisation -> 6 NEB over like-atom permutations -> validation.

Every block iterates simulate -> sample -> label -> retrain (workflows/active_learning.py) until its
termination criterion holds. Labels carry block, iteration and the reason they were sampled.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, wait

import numpy as np
from ase import Atoms

from reactforge.schemas.protocol import BLOCK_NAMES
from reactforge.schemas.tasks import MDSpec, NEBSpec, OptimiseSpec, SinglePointSpec

from . import catalysis_build as build
from . import sampling
from .active_learning import SEED_STRIDE, BlockReport, Campaign, then


def _dimer_pairs(system, P3) -> list[tuple[str, str]]:
    return sampling.dimer_pairs(system.elements, system.adsorbate_elements(),
                                with_surface=P3.dimer_pairs == "adsorbate_surface")


def plan(protocol) -> list[str]:
    """What --check prints: the system built from the protocol and what each block will run."""
    system = build.build_system(protocol)
    P = protocol.parameters
    dimer_pairs = _dimer_pairs(system, P.b3_adsorbate_seed)
    lines = [f"system: bulk {system.bulk.get_chemical_formula()} ({len(system.bulk)} atoms), slab "
             f"{len(system.slab)} atoms, active-site slab {len(system.site_slab)} atoms, elements "
             f"{', '.join(system.elements)}; reference {protocol.reference.code}, model {protocol.model.model}, "
             f"σ_thr {protocol.sigma_thr_eV * 1000:.0f} meV"]
    detail = {
        0: f"{len(system.elements)} isolated atoms + bulk + {P.b0_initial.n_rattled} rattled/deformed cells "
           "-> singlepoint; train",
        1: f"md ({P.b1_bulk.md_steps} steps) on the bulk until no breach; ≤ {P.b1_bulk.max_iterations} iterations",
        2: f"md ({P.b2_surface.md_steps} steps) on slab and active site; ≤ {P.b2_surface.max_iterations} iterations",
        3: f"{P.b3_adsorbate_seed.dimers_per_pair * len(dimer_pairs)} dimers ({P.b3_adsorbate_seed.dimers_per_pair} "
           f"each for {', '.join('-'.join(p) for p in dimer_pairs)}), "
           f"{P.b3_adsorbate_seed.fps_per_intermediate} FPS placements per intermediate, then md",
        4: f"md ({P.b4_adsorbate_md.md_steps} steps) on {len(system.intermediates)} intermediates",
        5: f"optimise {len(system.intermediates)} intermediates, label minima until reference "
           f"fmax < {P.b5_geometry.fmax_criterion_eV_per_A} eV/Å",
        6: f"neb ({P.b6_neb.n_images} images) per reaction and permutation until |ΔE| < "
           f"{P.b6_neb.energy_criterion_eV * 1000:.0f} meV",
    }
    for b in protocol.blocks:
        lines.append(f"block {b} ({BLOCK_NAMES[b]}): {detail[b]}")
    for r in protocol.reactions:
        idx = system.adsorbate_indices(r.initial)
        n = len(sampling.like_atom_permutations(system.intermediates[r.initial], system.intermediates[r.final],
                                                idx, P.b6_neb.permutation_limit, P.b6_neb.permutations_kept))
        lines.append(f"  reaction {r.name}: {r.initial} -> {r.final}, {n} like-atom permutation(s)")
    lines.append(f"validation (reference NEB from the MLFF path): {'on' if protocol.validation.enabled else 'off'}")
    return lines


class Catalysis:
    """One protocol run. Methods are the blocks, in the order of the thesis."""

    def __init__(self, protocol, engine, store, progress):
        self.p = protocol
        self.P = protocol.parameters
        self.engine, self.store, self.progress = engine, store, progress
        self.system = build.build_system(protocol)
        self.fixed = build.fixed_indices(self.system.site_slab)
        self.campaign = Campaign(engine, store, progress, protocol.reference, protocol.model, seed=protocol.seed)
        self.reports: dict[str, dict] = store.read_json("blocks.json") or {}
        self.minima: dict[str, Atoms] = {}
        self.barriers: dict[str, dict] = {}
        self.neb_history: list[dict] = []
        self.paths: dict[str, dict] = {}
        self._bands: dict[tuple[str, int], list[Atoms]] = {}  # (reaction, permutation) -> last MLFF band
        self._validation_images: dict[str, list[Atoms]] = {}

    # ------------------------------------------------------------------ helpers
    def _md(self, block) -> dict:
        return {"steps": block.md_steps, "timestep_fs": block.timestep_fs, "temperature_K": block.temperature_K,
                "friction_per_fs": block.friction_per_fs, "check_every": block.check_every,
                "sigma_thr_eV": self.p.sigma_thr_eV}

    def _finish(self, report: BlockReport):
        self.reports[report.name] = report.as_dict()
        self.store.write_json("blocks.json", self.reports)
        self.progress.log(f"{report.name}: {report.iterations} iteration(s), {report.labels_added} labels, "
                          f"termination {'met' if report.termination_met else 'NOT met'} "
                          f"(criterion value {report.criterion_value})")

    def _surface_structures(self) -> list[Atoms]:
        return ([self.system.slab] if self.P.b2_surface.clean_slab else []) + [self.system.site_slab]

    # ------------------------------------------------------------------ block 0
    def block0(self):
        name, P0 = BLOCK_NAMES[0], self.P.b0_initial
        report = BlockReport(name, criterion="initial set (no iteration)")
        self.progress.set_stage(f"block 0 ({name}): labelling the initial set")
        if P0.isolated_atoms:
            isolated = build.isolated_atoms(self.system.elements, P0.isolated_box_A)
            self.campaign.label(isolated, block=name, iteration=0, reason="isolated atom",
                                config_type="isolated_atom", report=report)
        self.campaign.label([self.system.bulk], block=name, iteration=0, reason="bulk", report=report)
        rattled = build.rattled_bulk(self.system.bulk, P0.n_rattled, P0.rattle_sigma_A, P0.strain_sigma, self.p.seed)
        self.campaign.label(rattled, block=name, iteration=0, reason="rattled + deformed bulk", report=report)
        self.campaign.retrain(f"{name}-0")
        report.termination_met = True
        self._finish(report)

    # ------------------------------------------------------------------ blocks 1-2 (and 4)
    def md_block(self, b: int, structures: list[Atoms], params, label_first: str | None = None):
        """With `label_first` (the label's reason), the structures themselves are labelled before any MD."""
        report = BlockReport(BLOCK_NAMES[b], criterion="max per-atom σ over full MD runs (eV) < σ_thr")
        md = self._md(params) | {"fixed_atoms": []}
        if label_first:
            self.campaign.label(structures, block=BLOCK_NAMES[b], iteration=0, reason=label_first, report=report)
            self.campaign.retrain(f"{BLOCK_NAMES[b]}-0")
        self.campaign.md_block(BLOCK_NAMES[b], structures, md, params.max_iterations, report=report)
        self._finish(report)

    # ------------------------------------------------------------------ block 3
    def block3(self):
        name, P3 = BLOCK_NAMES[3], self.P.b3_adsorbate_seed
        report = BlockReport(name, criterion="max per-atom σ over full MD runs (eV) < σ_thr")
        self.progress.set_stage(f"block 3 ({name}): dimers and placements")
        # dimers: 4 per element pair, the shortest at 20 eV/Å repulsion, weight 1/5
        pairs = _dimer_pairs(self.system, P3)

        def probe(atoms: Atoms) -> np.ndarray:  # the spacing search's reference calls belong to this block
            report.reference_calls += 1
            return self._reference_forces(atoms)

        dimers = sampling.make_dimers(probe, self.system.elements, P3.dimers_per_pair,
                                      P3.dimer_max_force_eV_per_A, P3.dimer_max_distance_A, P3.dimer_box_A,
                                      P3.dimer_weight, pairs=pairs)
        self.campaign.label(dimers, block=name, iteration=0, reason="dimer", energy_weight=P3.dimer_weight,
                            force_weight=P3.dimer_weight, config_type="dimer", report=report)
        # MLFF MD on the active site first (block-2 potential), then place intermediates on its snapshots
        snapshots = self._site_snapshots(P3)
        placed = []
        n_slab = len(self.system.site_slab)
        rng = np.random.default_rng(self.p.seed)
        for iname, inter in self.system.intermediates.items():
            candidates = []
            for snap in snapshots:
                candidates += sampling.place_adsorbate(snap, inter[n_slab:], self.system.site_position,
                                                       P3.placements_per_snapshot, P3.placement_radius_A, rng=rng)
            centres = [list(range(n_slab, len(c))) for c in candidates]
            keep = sampling.fps_structures(candidates, P3.fps_per_intermediate, self.system.elements, centres,
                                           cutoff_A=P3.soap_cutoff_A, l_max=P3.soap_l_max, n_max=P3.soap_n_max)
            placed += [candidates[k] for k in keep]
        self.campaign.label(placed, block=name, iteration=0, reason="placement", report=report)
        self.campaign.label(list(self.system.intermediates.values()), block=name, iteration=0,
                            reason="approximate intermediate", report=report)
        self.campaign.retrain(f"{name}-0")
        md = self._md(P3) | {"fixed_atoms": self.fixed}
        self.campaign.md_block(name, placed, md, P3.max_iterations, report=report)
        self._finish(report)

    def _reference_forces(self, atoms: Atoms) -> np.ndarray:
        """Reference forces through the engine (journaled): used to space the dimers."""
        spec = SinglePointSpec(reference=self.p.reference, max_force_eV_per_A=1e4)
        return np.asarray(self.engine.run(spec, [atoms]).forces_eV_per_A)

    def _site_snapshots(self, P3) -> list[Atoms]:
        snapshots, atoms = [], self.system.site_slab
        per = max(1, P3.site_md_steps // P3.site_md_snapshots)
        for k in range(P3.site_md_snapshots):
            # σ_thr here only ends a segment early; the snapshot is the segment's last frame
            spec = MDSpec(model=self.campaign.model, steps=per, temperature_K=P3.temperature_K,
                          timestep_fs=P3.timestep_fs, sigma_thr_eV=10.0, fixed_atoms=self.fixed,
                          seed=SEED_STRIDE * self.p.seed + 7 + k)
            atoms = self.engine.run(spec, [atoms]).final
            snapshots.append(atoms)
        return snapshots

    # ------------------------------------------------------------------ block 5
    def _optimise_spec(self, stop_on_breach: bool) -> OptimiseSpec:
        """MLFF minimisation with block 5's settings and the current model."""
        P5 = self.P.b5_geometry
        return OptimiseSpec(model=self.campaign.model, fmax_eV_per_A=P5.mlff_fmax_eV_per_A, max_steps=P5.max_steps,
                            optimizer=P5.optimizer, fixed_atoms=self.fixed, sigma_thr_eV=self.p.sigma_thr_eV,
                            stop_on_breach=stop_on_breach)

    def block5(self):
        name, P5 = BLOCK_NAMES[5], self.P.b5_geometry
        report = BlockReport(name, criterion="max reference force on MLFF minima (eV/Å) < "
                                             f"{P5.fmax_criterion_eV_per_A}")
        start = {n: a.copy() for n, a in self.system.intermediates.items()}
        fixed = set(self.fixed)
        for iteration in range(1, P5.max_iterations + 1):
            self.progress.set_stage(f"block 5 ({name}): iteration {iteration}, optimising {len(start)} intermediates")
            # an optimisation is interrupted like an MD when σ breaches σ_thr (thesis §3.2): that
            # configuration is labelled instead of a minimum the model does not know
            spec = self._optimise_spec(stop_on_breach=True)
            labels: dict[str, Future] = {}
            breached: dict[str, bool] = {}
            lock = threading.Lock()

            def on_min(f: Future, iname: str, iteration=iteration):
                if f.exception() is not None:
                    self.progress.log(f"{name}: optimisation of {iname} failed: {f.exception()}")
                    return
                result = f.result()
                with lock:
                    if not result.breached:
                        self.minima[iname] = result.final
                    labels[iname] = self.campaign.label(
                        [result.final], block=name, iteration=iteration,
                        reason="threshold breach" if result.breached else "final geometry", report=report)[0]
                    breached[iname] = result.breached

            wait([then(self.engine.submit(spec, [atoms]), lambda f, iname=iname: on_min(f, iname))
                  for iname, atoms in start.items()])
            wait(list(labels.values()))
            forces = {}
            for iname, lf in labels.items():
                if lf.exception() is None:
                    F = np.asarray(lf.result().forces_eV_per_A)
                    free = [i for i in range(len(F)) if i not in fixed]
                    forces[iname] = float(np.linalg.norm(F[free], axis=1).max())
            worst = max(forces.values()) if forces else float("inf")
            report.iterations, report.criterion_value = iteration, worst
            self.progress.log(f"{name} iteration {iteration}: reference max force on the MLFF minima "
                              + ", ".join(f"{n} {v:.2f}" for n, v in sorted(forces.items())) + " eV/Å")
            report.history.append({"iteration": iteration, "max_ref_force_eV_per_A": forces,
                                   "breached": sorted(n for n, b in breached.items() if b)})
            if len(forces) == len(start) and not any(breached.values()) and worst < P5.fmax_criterion_eV_per_A:
                report.termination_met = True
                break
            # continue from the last sane minimum (a breached run restarts where it started)
            start = {n: self.minima.get(n, a) for n, a in start.items()}
            self.campaign.retrain(f"{name}-{iteration}")
        self._finish(report)

    # ------------------------------------------------------------------ block 6
    def block6(self):
        name, P6 = BLOCK_NAMES[6], self.P.b6_neb
        report = BlockReport(name, criterion=f"max |E_MLFF − E_ref| on sampled images (eV) < {P6.energy_criterion_eV}")
        ends = {n: self.minima.get(n, a) for n, a in self.system.intermediates.items()}
        perms = {}
        for r in self.p.reactions:
            idx = self.system.adsorbate_indices(r.initial)
            perms[r.name] = [order for order, _ in sampling.like_atom_permutations(
                ends[r.initial], ends[r.final], idx, P6.permutation_limit, P6.permutations_kept)]
        # interpolated images between every reaction's endpoints, before iterating (thesis §3.3)
        if P6.interpolated_images:
            images = []
            for r in self.p.reactions:
                final = sampling.apply_order(ends[r.final], perms[r.name][0])
                images += sampling.interpolated_images(ends[r.initial], final, P6.interpolated_images)
            self.campaign.label(images, block=name, iteration=0, reason="interpolated image", report=report)
            self.campaign.retrain(f"{name}-0")
        for iteration in range(1, P6.max_iterations + 1):
            self.progress.set_stage(f"block 6 ({name}): iteration {iteration}, NEBs over "
                                    f"{sum(len(v) for v in perms.values())} permutation(s)")
            ends = self._relax_ends(ends)
            errors, row = self._neb_iteration(iteration, ends, perms, report)
            worst = max(errors) if errors else float("inf")
            report.iterations, report.criterion_value = iteration, worst
            report.history.append({"iteration": iteration, "max_abs_energy_error_eV": worst, "barriers": row})
            self.neb_history.append({"iteration": iteration, **row})
            if errors and worst < P6.energy_criterion_eV and len(row) == len(self.p.reactions):
                report.termination_met = True
                break
            self.campaign.retrain(f"{name}-{iteration}")
        self._finish(report)

    def _relax_ends(self, ends: dict[str, Atoms]) -> dict[str, Atoms]:
        """Endpoints re-optimised with the model the NEBs use: block 5's minima belong to an earlier
        model, and a band between points that are not minima of its model has no defined barrier."""
        spec = self._optimise_spec(stop_on_breach=False)
        futures = {n: self.engine.submit(spec, [a]) for n, a in ends.items()}
        wait(futures.values())
        return {n: f.result().final if f.exception() is None else ends[n] for n, f in futures.items()}

    def _neb_spec(self, model=None, reference=None, **kw) -> NEBSpec:
        P6 = self.P.b6_neb
        base = dict(n_images=P6.n_images, interpolation=P6.interpolation, climb=P6.climb, method=P6.method,
                    precon=P6.precon, optimizer=P6.optimizer,
                    spring_k_eV_per_A2=P6.spring_k_eV_per_A2, fmax_eV_per_A=P6.mlff_fmax_eV_per_A,
                    max_steps=P6.max_steps, fixed_atoms=self.fixed, sigma_thr_eV=self.p.sigma_thr_eV)
        base.update(kw)
        if model is not None:
            base["model"] = model
        if reference is not None:
            base["reference"] = reference
        return NEBSpec(**base)

    def _neb_iteration(self, iteration: int, ends: dict, perms: dict, report: BlockReport):
        """NEBs for every reaction x permutation at once; each reaction's lowest path is labelled the
        moment its last permutation finishes."""
        spec = self._neb_spec(model=self.campaign.model)
        lock = threading.Lock()
        label_futures: dict[str, list[Future]] = {}
        row: dict[str, dict] = {}
        all_futures = []
        for r in self.p.reactions:
            futs = [self.engine.submit(spec, self._start_band(r.name, k, ends[r.initial],
                                                               sampling.apply_order(ends[r.final], perm)))
                    for k, perm in enumerate(perms[r.name])]
            pending = {"n": len(futs)}

            def done(_f, r=r, futs=futs, pending=pending):
                with lock:
                    pending["n"] -= 1
                    if pending["n"]:
                        return
                ok = [(k, f.result()) for k, f in enumerate(futs) if f.exception() is None]
                for k, res in ok:
                    self._bands[(r.name, k)] = res.images
                if not ok:
                    self.progress.log(f"block 6: every NEB of {r.name} failed")
                    return
                k, best = min(ok, key=lambda kr: max(kr[1].energies_eV))  # lowest-energy path
                self.paths[r.name] = {"images": best.images, "energies_eV": best.energies_eV, "permutation": k,
                                      "barriers_eV": [res.forward_barrier_eV for _, res in ok]}
                sampled = best.images if self.P.b6_neb.label_endpoints else best.images[1:-1]
                label_futures[r.name] = self.campaign.label(sampled, block=BLOCK_NAMES[6], iteration=iteration,
                                                            reason="NEB image", report=report)

            all_futures += [then(f, done) for f in futs]
        wait(all_futures)
        errors = []
        for r in self.p.reactions:
            if r.name not in label_futures:
                continue
            wait(label_futures[r.name])
            path = self.paths[r.name]
            e_ml = np.asarray(path["energies_eV"])
            # reference energies of the labelled images; NaN where unlabelled (the ends, by default) or failed
            e_ref = np.full(len(e_ml), np.nan)
            first = 0 if self.P.b6_neb.label_endpoints else 1
            e_ref[first:first + len(label_futures[r.name])] = [
                f.result().energy_eV if f.exception() is None else np.nan for f in label_futures[r.name]]
            finite = np.isfinite(e_ref)
            deviations = np.abs(e_ml - e_ref)[finite]
            errors += list(deviations)
            ref_barrier = float(np.nanmax(e_ref) - e_ref[0]) if finite.all() else None
            row[r.name] = {"mlff_barrier_eV": float(e_ml.max() - e_ml[0]), "reference_barrier_eV": ref_barrier,
                           "permutations_screened": len(perms[r.name]), "best_permutation": path["permutation"],
                           "mlff_energies_eV": e_ml.tolist(),
                           "reference_energies_eV": [float(e) if ok else None for e, ok in zip(e_ref, finite)]}
            self.barriers[r.name] = row[r.name]
            self.progress.log(f"block 6 iteration {iteration}: {r.name} barrier MLFF {row[r.name]['mlff_barrier_eV']:.3f}"
                              f" eV, reference {ref_barrier if ref_barrier is None else round(ref_barrier, 3)} eV,"
                              f" max |ΔE| on the labelled images "
                              f"{deviations.max() if deviations.size else float('nan'):.3f} eV")
        return errors, row

    def _start_band(self, reaction: str, k: int, initial: Atoms, final: Atoms) -> list[Atoms]:
        """The NEB's starting structures: the two ends (interpolated by the task), or with warm_start the
        interior of this permutation's previous band between the freshly relaxed ends."""
        old = self._bands.get((reaction, k)) if self.P.b6_neb.warm_start else None
        return [initial, *old[1:-1], final] if old else [initial, final]

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict:
        """Reference NEB started from the MLFF's final path of each reaction (thesis §3.4.1).

        With `relax_endpoints` the band's two ends are first relaxed on the reference: a barrier is
        measured from a minimum, and the MLFF minimum is one only to the model's force accuracy; a
        reference band pinned to it can run downhill from its first image."""
        V = self.p.validation
        names = [r.name for r in self.p.reactions if r.name in self.paths]
        bands = {n: list(self.paths[n]["images"]) for n in names}
        relaxed: dict[str, list] = {n: [] for n in names}
        if V.relax_endpoints:
            self.progress.set_stage(f"validation: relaxing {2 * len(names)} reaction endpoints on the reference")
            spec = OptimiseSpec(reference=self.p.reference, fmax_eV_per_A=V.fmax_eV_per_A,
                                max_steps=V.endpoint_max_steps, fixed_atoms=self.fixed)
            ends = {(n, k): self.engine.submit(spec, [bands[n][k]]) for n in names for k in (0, -1)}
            wait(ends.values())
            for (n, k), f in ends.items():
                if f.exception() is None:
                    bands[n][k] = f.result().final
                    relaxed[n].append(f.result())
                else:
                    self.progress.log(f"validation: reference relaxation of a {n} endpoint failed: {f.exception()}")
        futures = {}
        for n in names:
            spec = self._neb_spec(reference=self.p.reference, fmax_eV_per_A=V.fmax_eV_per_A, max_steps=V.max_steps,
                                  climb=True)
            futures[n] = self.engine.submit(spec, bands[n])
        self.progress.set_stage(f"validation: reference NEBs for {len(futures)} reaction(s)")
        wait(futures.values())
        out = {}
        for rname, f in futures.items():
            if f.exception() is not None:
                out[rname] = {"error": str(f.exception())}
                continue
            res = f.result()
            ends_calls = sum(len(o.energies_eV) for o in relaxed[rname])
            out[rname] = {"reference_fmax_step0_eV_per_A": res.fmax_initial_eV_per_A, "steps": res.steps,
                          "converged": res.converged, "reference_barrier_eV": res.forward_barrier_eV,
                          "reference_energies_eV": res.energies_eV,
                          "endpoints_relaxed": len(relaxed[rname]) == 2,
                          "endpoint_relaxation": [{"steps": o.steps, "converged": o.converged,
                                                   "fmax_eV_per_A": o.fmax_eV_per_A} for o in relaxed[rname]],
                          "reference_calls": res.energy_evaluations + ends_calls}
            self._validation_images[rname] = res.images
        return out

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        blocks = self.p.blocks
        if 0 in blocks:
            self.block0()
        elif self.campaign.model is None:
            self.campaign.retrain("initial")
        if 1 in blocks:
            self.md_block(1, [self.system.bulk], self.P.b1_bulk)
        if 2 in blocks:
            # the slabs as built: σ of a model that has seen only bulk can stay under σ_thr on a
            # surface it has never been shown, and then the surface would never be labelled
            self.md_block(2, self._surface_structures(), self.P.b2_surface,
                          label_first="slab" if self.P.b2_surface.label_slabs else None)
        if 3 in blocks:
            self.block3()
        if 4 in blocks:
            report = BlockReport(BLOCK_NAMES[4], criterion="max per-atom σ over full MD runs (eV) < σ_thr")
            md = self._md(self.P.b4_adsorbate_md) | {"fixed_atoms": self.fixed}
            self.campaign.md_block(BLOCK_NAMES[4], list(self.system.intermediates.values()), md,
                                   self.P.b4_adsorbate_md.max_iterations, report=report)
            self._finish(report)
        if 5 in blocks:
            self.block5()
        if 6 in blocks:
            self.block6()
        validation = self.validate() if self.p.validation.enabled and self.paths else {}
        barriers = []
        for r in self.p.reactions:
            b = self.barriers.get(r.name)
            if b is None:
                continue
            ref = validation.get(r.name, {}).get("reference_barrier_eV", b["reference_barrier_eV"])
            barriers.append({"reaction": r.name, "permutations_screened": b["permutations_screened"],
                             "mlff_barrier_eV": b["mlff_barrier_eV"], "reference_barrier_eV": ref,
                             "abs_error_eV": abs(b["mlff_barrier_eV"] - ref) if ref is not None else None})
        summary = {"blocks": self.reports, "barriers": barriers, "validation": validation,
                   "training_set_size": self.store.count(), "model": self.campaign.model.model_dump(mode="json")}
        self._write_paths(validation)
        self._report(summary)
        return summary

    def _write_paths(self, validation: dict):
        """paths/<reaction>.xyz: the final MLFF band (MLFF and reference energies per image), and
        paths/<reaction>.validation.xyz: the reference NEB started from it."""

        def save(name: str, images: list[Atoms], info: dict[str, list]):
            frames = []
            for k, image in enumerate(images):
                a = image.copy()
                a.calc = None
                a.info.update({key: values[k] for key, values in info.items()
                               if values is not None and values[k] is not None})
                frames.append(a)
            self.store.write_xyz(f"paths/{name}", frames)

        for rname, path in self.paths.items():
            row = self.barriers.get(rname, {})
            save(f"{rname}.xyz", path["images"], {"energy_mlff_eV": path["energies_eV"],
                                                 "energy_reference_eV": row.get("reference_energies_eV")})
            if rname in self._validation_images:
                save(f"{rname}.validation.xyz", self._validation_images[rname],
                     {"energy_reference_eV": validation[rname]["reference_energies_eV"]})

    def _report(self, summary: dict):
        from . import report

        report.write_report(self.store.run_dir / "report", summary=summary, training_set=self.store.training_set(),
                            neb_history=self.neb_history, paths=self.paths, model=self.campaign.model)


def run(protocol, engine, store, progress) -> dict:
    return Catalysis(protocol, engine, store, progress).run()
