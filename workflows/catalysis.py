"""The automated catalysis training protocol (thesis §3.3, Fig. 3.3), block by block.

0 initial set (+ gas references) -> 1 bulk MD -> 2 surface MD -> 3 adsorbate seed (dimers, placements) + MD
-> 4 adsorbate MD -> 5 geometry optimisation -> 6 NEB over like-atom permutations -> validation.

Every block iterates simulate -> sample -> label -> retrain (workflows/active_learning.py) until its
termination criterion holds. Labels carry block, iteration and the reason they were sampled.
Blocks 5 and 6 also give each iteration's adsorption energies with the MLFF and the reference
(workflows/adsorption.py: μ from block 0's gas references, the bare site slab relaxed alongside).

The protocol is the table `BLOCKS` (end of this file): each entry is a block's number, its figure
title, its section of `protocol.parameters`, the line `plan()` prints for it and the function that
runs it and returns its BlockReport. `plan()` and `Catalysis.run` read the table; a new block is one
entry there plus, in schemas/protocol.py, its parameter section and its name in BLOCK_NAMES.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from functools import partial

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from reactforge.engine.engine import TaskFailed
from reactforge.engine.futures import settled, then
from reactforge.schemas.protocol import BLOCK_NAMES
from reactforge.schemas.results import NEBResult, OptimiseResult
from reactforge.schemas.tasks import ISOLATED_ATOM, EvaluateSpec, MDSpec, NEBSpec, OptimiseSpec, SinglePointSpec

from . import adsorption, sampling, screening
from . import catalysis_build as build
from .adsorption import SITE_SLAB
from .band import perpendicular_fmax
from .active_learning import SEED_STRIDE, BlockReport, Campaign, Labels


def band_frames(images: list[Atoms], info: dict[str, list | None], energies: list | None = None,
                forces: list | None = None) -> list[Atoms]:
    """Copies of a band's images with per-image `info`, and energies (with forces, where the NEB kept them)
    as calculator results: `ase gui` shows the profile and `ase nebplot` fits the band from the file."""
    frames = []
    for k, image in enumerate(images):
        a = image.copy()  # ASE's copy carries no calculator
        a.info.update({key: values[k] for key, values in info.items() if values is not None and values[k] is not None})
        if energies is not None and energies[k] is not None and np.isfinite(energies[k]):
            a.calc = SinglePointCalculator(a, energy=float(energies[k]),
                                           **({"forces": np.asarray(forces[k], dtype=float)} if forces else {}))
        frames.append(a)
    return frames


@dataclass(frozen=True)
class Block:
    """One block of the protocol. `plan(protocol, system, params)` is what --check prints for it;
    `run(catalysis, name, params)` runs it and returns its BlockReport."""

    number: int
    title: str  # short label for figures
    parameters: str  # its section of protocol.parameters
    plan: Callable[..., str]
    run: Callable[..., BlockReport]

    @property
    def name(self) -> str:
        return BLOCK_NAMES[self.number]

    def params(self, protocol):
        return getattr(protocol.parameters, self.parameters)


def gas_references(protocol, system) -> list[str]:
    """The gas references of the protocol's adsorbates: its `gas_references`, or the defaults for its
    adsorbate elements. ValueError naming the field when they do not fix every adsorbate element's μ."""
    elements = system.adsorbate_elements()
    names = protocol.gas_references
    if names is None:
        names = adsorption.default_references(elements)
    if names:
        adsorption.check_references(names, elements)
    return list(names)


def plan(protocol) -> list[str]:
    """What --check prints: the system built from the protocol and what each block will run."""
    system = build.build_system(protocol)
    gas = gas_references(protocol, system)
    lines = [f"system: bulk {system.bulk.get_chemical_formula()} ({len(system.bulk)} atoms), slab "
             f"{len(system.slab)} atoms, active-site slab {len(system.site_slab)} atoms, elements "
             f"{', '.join(system.elements)}; reference {protocol.reference.code}, model {protocol.model.model}, "
             f"σ_thr {protocol.sigma_thr_eV * 1000:.0f} meV"]
    lines += build.describe_site(protocol, system)
    for number in protocol.blocks:
        block = BLOCKS[number]
        lines.append(f"block {number} ({block.name}): {block.plan(protocol, system, block.params(protocol))}")
    neb = protocol.parameters.b6_neb
    for r in protocol.reactions:
        idx = system.adsorbate_indices(r.initial)
        n = len(sampling.like_atom_permutations(system.intermediates[r.initial], system.intermediates[r.final],
                                                idx, neb.permutation_limit, neb.permutations_kept))
        lines.append(f"  reaction {r.name}: {r.initial} -> {r.final}, {n} like-atom permutation(s)")
    lines.append(f"validation (reference NEB from the MLFF path): {'on' if protocol.validation.enabled else 'off'}")
    lines.append(f"adsorption energies: μ of {', '.join(system.adsorbate_elements())} from {', '.join(gas)} "
                 "(block 0), the bare site slab relaxed in blocks 5-6" if gas else
                 "adsorption energies: off (gas_references: [])")
    return lines


class Catalysis:
    """One protocol run: the system, the campaign, and what blocks 5-6 and validation hand on."""

    def __init__(self, protocol, engine, store, progress):
        self.protocol = protocol
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
        self._validation_images: dict[str, NEBResult] = {}  # the reference NEBs, for paths/*.validation.xyz
        # adsorption energies: the gas references block 0 relaxes, μ from their reference energies, and
        # each block-5/6 iteration's rows (workflows/adsorption.py)
        self.gas_names = gas_references(protocol, self.system)
        self.gas: dict[str, dict] = {}  # name -> {"atoms", "reference_eV", ...} or {"error"}
        self.mu: dict[str, float] | None = None  # the reference's, for both methods' E_ads
        n_site = len(self.system.site_slab)
        self.adsorbates = {n: dict(Counter(a.get_chemical_symbols()[n_site:]))
                           for n, a in self.system.intermediates.items()}
        self.adsorption_iterations: list[dict] = []

    # ------------------------------------------------------------------ helpers
    def _md_settings(self, params, fixed: list[int]) -> dict:
        """MDSpec fields of an MD block, all but the model and the seed."""
        return {"steps": params.md_steps, "timestep_fs": params.timestep_fs, "temperature_K": params.temperature_K,
                "friction_per_fs": params.friction_per_fs, "check_every": params.check_every,
                "sigma_thr_eV": self.protocol.sigma_thr_eV, "fixed_atoms": fixed}

    def _finish(self, report: BlockReport):
        self.reports[report.name] = report.as_dict()
        self.store.write_json("blocks.json", self.reports)
        self.progress.log(f"{report.name}: {report.iterations} iteration(s), {report.labels_added} labels, "
                          f"termination {'met' if report.termination_met else 'NOT met'} "
                          f"(criterion value {report.criterion_value})")
        self._refresh_report()

    def _refresh_report(self):
        """report/ after each block from what is known so far (the parity figure, which costs evaluate
        tasks, only at the end): a user follows the run in the browser. A figure that fails is logged,
        never the run's end."""
        from . import report

        try:
            report.write_report(self.store, summary={"name": self.protocol.name, "status": "running",
                                                     "blocks": self.reports},
                                training_set=self.store.training_set(), neb_history=self.neb_history,
                                paths=self.paths)
        except (ValueError, OSError) as err:
            self.progress.log(f"report/ not refreshed: {err}")

    # ------------------------------------------------------------------ block 0: gas references
    def _relax_gas(self, params) -> dict[str, Future]:
        """Reference relaxations of the gas molecules in a box (a free atom has nothing to relax)."""
        spec = OptimiseSpec(reference=self.protocol.reference, fmax_eV_per_A=params.gas_fmax_eV_per_A,
                            max_steps=params.gas_max_steps)
        return {n: self.engine.submit(spec, [adsorption.gas_atoms(n, params.isolated_box_A)])
                for n in self.gas_names if not adsorption.is_atom(n)}

    def _gas_energies(self, params, relaxing: dict[str, Future], isolated: Labels | None) -> int:
        """The gas references' reference energies: a single point at each relaxed geometry (the same
        force-consistent energy as every label), a free atom's from block 0's isolated atom when there is
        one; then the reference μ. Returns the reference calls (relaxation steps and single points).

        They are not labels: thesis Table A.1 has no gas molecule, and in the quickstart the first GAP
        fit aborts on them (one H–H distance is too few for gap_fit's uniform 2-body sparsification)."""
        calls, finals = 0, {}
        for n, f in relaxing.items():
            if f.exception() is not None:
                self.gas[n] = {"error": str(f.exception())}
                self.progress.log(f"block 0: reference relaxation of gas reference {n} failed: {f.exception()}")
                continue
            res: OptimiseResult = f.result()
            calls += len(res.energies_eV)
            finals[n] = res.final
            self.gas[n] = {"relaxation": {"steps": res.steps, "converged": res.converged,
                                          "fmax_eV_per_A": res.fmax_eV_per_A, "reference_calls": len(res.energies_eV)}}
        elements = sorted(set(self.system.elements))
        results = {}
        for n in (n for n in self.gas_names if adsorption.is_atom(n)):
            self.gas[n] = {"relaxation": None}  # nothing to relax
            if isolated is not None:
                results[n] = isolated.results()[elements.index(n)]
            else:
                finals[n] = adsorption.gas_atoms(n, params.isolated_box_A)
        spec = SinglePointSpec(reference=self.protocol.reference)
        points = {n: self.engine.submit(spec, [a]) for n, a in finals.items()}
        wait(points.values())
        calls += len(points)
        results.update({n: settled(f) for n, f in points.items()})
        for n, res in results.items():
            if res is None:
                self.gas[n] = {"error": "its reference single point failed"}
                continue
            self.gas[n].update(atoms=res.atoms, reference_eV=res.energy_eV, composition=adsorption.composition(n))
        if self.gas_names and all("reference_eV" in self.gas[n] for n in self.gas_names):
            self.mu = adsorption.chemical_potentials({n: self.gas[n]["reference_eV"] for n in self.gas_names})
        return calls

    def _record_adsorption(self, block: str, iteration: int, mlff_eV: dict, reference_eV: dict) -> None:
        """One iteration's adsorption energies from the minima's MLFF and reference energies (the bare
        site slab's under SITE_SLAB), both with the reference μ. The μ the model would give (its energies
        of the gas references at their reference geometries, one evaluate task) are recorded beside
        them: how far it is from the gas phase it was never fitted to. The model must be the one that
        relaxed the minima: call before retraining."""
        if self.mu is None:
            return  # no gas references (gas_references: [], block 0 not run, or one failed)
        names = self.gas_names
        try:
            result = self.engine.run(EvaluateSpec(model=self.campaign.model), [self.gas[n]["atoms"] for n in names])
            mu_mlff = adsorption.chemical_potentials(dict(zip(names, result.energies_eV)))
        except TaskFailed as err:
            self.progress.log(f"{block} iteration {iteration}: MLFF energies of the gas references failed: {err}")
            mu_mlff = None
        site = (mlff_eV.get(SITE_SLAB), reference_eV.get(SITE_SLAB))
        rows = adsorption.adsorption_rows(self.adsorbates, mlff_eV, reference_eV, site, self.mu)
        mae = adsorption.mean_absolute_error(rows)
        self.adsorption_iterations.append({"block": block, "iteration": iteration, "intermediates": rows,
                                           "mae_eV": mae, "site_slab": {"mlff_eV": site[0], "reference_eV": site[1]},
                                           "chemical_potentials_mlff_eV": mu_mlff})
        if mae is not None:
            self.progress.log(f"{block} iteration {iteration}: adsorption energy MAE {mae * 1000:.0f} meV over "
                              f"{sum(r['error_eV'] is not None for r in rows.values())} intermediate(s)")

    def _adsorption_summary(self, barriers: list[dict]) -> dict | None:
        """summary.json's `adsorption`: the gas references and μ, every iteration's rows and MAE, the last
        iteration's rows as `final`, and the mechanism on one axis from them and the barrier table (its
        reference barrier is the validation's where there is one)."""
        if not self.gas_names:
            return None
        gas = {n: {k: v for k, v in self.gas[n].items() if k != "atoms"} for n in self.gas_names if n in self.gas}
        final = self.adsorption_iterations[-1]["intermediates"] if self.adsorption_iterations else {}
        steps = [(r.name, r.initial, r.final) for r in self.protocol.reactions]
        table = {b["reaction"]: (b["mlff_barrier_eV"], b["reference_barrier_eV"]) for b in barriers}
        return {"gas_references": gas, "chemical_potentials_eV": self.mu,
                "iterations": self.adsorption_iterations, "final": final,
                "mae_eV": self.adsorption_iterations[-1]["mae_eV"] if self.adsorption_iterations else None,
                "profile": adsorption.mechanism_profile(steps, final, table) if final else []}

    # ------------------------------------------------------------------ block 3
    def _reference_forces(self, atoms: Atoms) -> np.ndarray:
        """Reference forces through the engine (journaled): used to space the dimers."""
        spec = SinglePointSpec(reference=self.protocol.reference, max_force_eV_per_A=1e4)
        return np.asarray(self.engine.run(spec, [atoms]).forces_eV_per_A)

    def _site_snapshots(self, params) -> list[Atoms]:
        snapshots, atoms = [], self.system.site_slab
        per = max(1, params.site_md_steps // params.site_md_snapshots)
        for k in range(params.site_md_snapshots):
            # σ_thr here only ends a segment early; the snapshot is the segment's last frame
            spec = MDSpec(model=self.campaign.model, steps=per, temperature_K=params.temperature_K,
                          timestep_fs=params.timestep_fs, sigma_thr_eV=10.0, fixed_atoms=self.fixed,
                          seed=SEED_STRIDE * self.protocol.seed + 7 + k)
            atoms = self.engine.run(spec, [atoms]).final
            snapshots.append(atoms)
        return snapshots

    # ------------------------------------------------------------------ block 5
    def _optimise_spec(self, stop_on_breach: bool) -> OptimiseSpec:
        """MLFF minimisation with block 5's settings and the current model."""
        params = self.protocol.parameters.b5_geometry
        return OptimiseSpec(model=self.campaign.model, fmax_eV_per_A=params.mlff_fmax_eV_per_A,
                            max_steps=params.max_steps, optimizer=params.optimizer, fixed_atoms=self.fixed,
                            sigma_thr_eV=self.protocol.sigma_thr_eV, stop_on_breach=stop_on_breach)

    # ------------------------------------------------------------------ block 6
    def _relax_ends(self, ends: dict[str, Atoms]) -> dict[str, OptimiseResult | None]:
        """Endpoints re-optimised with the model the NEBs use: block 5's minima belong to an earlier
        model, and a band between points that are not minima of its model has no defined barrier.
        None where the optimisation failed (the end stays as it was)."""
        spec = self._optimise_spec(stop_on_breach=False)
        futures = {n: self.engine.submit(spec, [a]) for n, a in ends.items()}
        wait(futures.values())
        return {n: settled(f) for n, f in futures.items()}

    def _neb_spec(self, model=None, reference=None, **kw) -> NEBSpec:
        params = self.protocol.parameters.b6_neb
        base = dict(n_images=params.n_images, interpolation=params.interpolation, climb=params.climb,
                    method=params.method, precon=params.precon, optimizer=params.optimizer,
                    spring_k_eV_per_A2=params.spring_k_eV_per_A2, fmax_eV_per_A=params.mlff_fmax_eV_per_A,
                    max_steps=params.max_steps, fixed_atoms=self.fixed, sigma_thr_eV=self.protocol.sigma_thr_eV)
        base.update(kw)
        if model is not None:
            base["model"] = model
        if reference is not None:
            base["reference"] = reference
        return NEBSpec(**base)

    def _neb_iteration(self, name: str, iteration: int, ends: dict, perms: dict,
                       active: dict) -> tuple[list, dict, dict, list[Labels], dict]:
        """Every reaction's permutations screened at once (workflows/screening.py: short non-climbing
        bands, the full NEB for the lowest and those within the margin); each reaction's lowest path is
        labelled the moment its screening ends. `active`: per reaction, the permutation indices still
        screened. Returns the energy errors on the labelled images, the largest reference force across
        each reaction's band, the iteration's barriers per reaction, the labels and the screenings."""
        params = self.protocol.parameters.b6_neb
        full = self._neb_spec(model=self.campaign.model)
        short = (self._neb_spec(model=self.campaign.model, climb=False, max_steps=params.screen_steps)
                 if params.screen_steps else None)
        reactions = self.protocol.reactions
        lowest = {}
        for r in reactions:
            starts = {k: self._start_band(r.name, k, ends[r.initial], sampling.apply_order(ends[r.final], perms[r.name][k]))
                      for k in active[r.name]}
            lowest[r.name] = then(screening.screen(self.engine, short, full, starts, params.screen_margin_eV),
                                  partial(self._label_lowest_path, name=name, reaction=r.name, iteration=iteration))
        wait(lowest.values())
        errors, path_forces, row, labelled, screens = [], {}, {}, [], {}
        label_endpoints = params.label_endpoints
        for r in reactions:
            if (outcome := settled(lowest[r.name])) is None:
                self.progress.log(f"block 6: the NEBs of {r.name} failed: {lowest[r.name].exception()}")
                continue
            path, labels, screens[r.name] = outcome
            for k, res in screens[r.name].results.items():
                if res is not None:
                    self._bands[(r.name, k)] = res.images
            if path is None:
                continue
            self.paths[r.name] = path
            labelled.append(labels)
            e_ml = np.asarray(path["energies_eV"])
            # reference energies of the labelled images; NaN where unlabelled (the ends, by default) or failed
            e_ref = np.full(len(e_ml), np.nan)
            first = 0 if label_endpoints else 1
            results = dict(enumerate(labels.results(), start=first))
            for i, res in results.items():
                e_ref[i] = res.energy_eV if res is not None else np.nan
            finite = np.isfinite(e_ref)
            deviations = np.abs(e_ml - e_ref)[finite]
            errors += list(deviations)
            # the reference forces across the band on the labelled images: is this the reference's path?
            perp = perpendicular_fmax(path["images"], e_ml, {i: np.asarray(res.forces_eV_per_A)
                                                            for i, res in results.items() if res is not None},
                                      self.fixed, climb=self.protocol.parameters.b6_neb.climb)
            path_forces[r.name] = max(perp.values()) if perp else float("inf")
            ref_barrier = float(np.nanmax(e_ref) - e_ref[0]) if finite.all() else None
            row[r.name] = {"mlff_barrier_eV": float(e_ml.max() - e_ml[0]), "reference_barrier_eV": ref_barrier,
                           "permutations_screened": len(perms[r.name]), "best_permutation": path["permutation"],
                           "screened_band_max_eV": screens[r.name].screened_max_eV,
                           "full_neb_permutations": screens[r.name].full, "permutations_active": active[r.name],
                           "max_abs_energy_error_eV": float(deviations.max()) if deviations.size else None,
                           "reference_perpendicular_fmax_eV_per_A": path_forces[r.name],
                           "mlff_energies_eV": e_ml.tolist(),
                           "reference_energies_eV": [float(e) if ok else None for e, ok in zip(e_ref, finite)]}
            self.barriers[r.name] = row[r.name]
            self.progress.log(f"block 6 iteration {iteration}: {r.name} barrier MLFF "
                              f"{row[r.name]['mlff_barrier_eV']:.3f} eV, reference "
                              f"{ref_barrier if ref_barrier is None else round(ref_barrier, 3)} eV, "
                              "max |ΔE| on the labelled images "
                              f"{deviations.max() if deviations.size else float('nan'):.3f} eV, reference "
                              f"force across the band {path_forces[r.name]:.3f} eV/Å")
        return errors, path_forces, row, labelled, screens

    def _label_lowest_path(self, done: Future, *, name: str, reaction: str,
                           iteration: int) -> tuple[dict | None, Labels | None, screening.Screened]:
        """Runs once a reaction's screening is done: its lowest full NEB, the labels of its images, and
        the screening itself (the path and labels are None when every full NEB failed)."""
        screened = done.result()
        if (k := screened.lowest()) is None:
            self.progress.log(f"block 6: every NEB of {reaction} failed")
            return None, None, screened
        best = screened.results[k]
        path = {"images": best.images, "energies_eV": best.energies_eV, "forces_eV_per_A": best.forces_eV_per_A,
                "permutation": k,
                "barriers_eV": {j: screened.results[j].forward_barrier_eV for j in screened.full
                                if screened.results.get(j) is not None}}
        sampled = best.images if self.protocol.parameters.b6_neb.label_endpoints else best.images[1:-1]
        return path, self.campaign.label(sampled, block=name, iteration=iteration, reason="NEB image"), screened

    def _start_band(self, reaction: str, k: int, initial: Atoms, final: Atoms) -> list[Atoms]:
        """The NEB's starting structures: the two ends (interpolated by the task), or with warm_start the
        interior of this permutation's previous band between the freshly relaxed ends."""
        old = self._bands.get((reaction, k)) if self.protocol.parameters.b6_neb.warm_start else None
        return [initial, *old[1:-1], final] if old else [initial, final]

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict:
        """Reference NEB started from the MLFF's final path of each reaction (thesis §3.4.1).

        With `relax_endpoints` the band's two ends are first relaxed on the reference: a barrier is
        measured from a minimum, and the MLFF minimum is one only to the model's force accuracy; a
        reference band pinned to it can run downhill from its first image."""
        settings = self.protocol.validation
        names = [r.name for r in self.protocol.reactions if r.name in self.paths]
        bands = {n: list(self.paths[n]["images"]) for n in names}
        relaxed: dict[str, list] = {n: [] for n in names}
        end_errors: dict[str, list[str]] = {n: [] for n in names}
        if settings.relax_endpoints:
            self.progress.set_stage(f"validation: relaxing {2 * len(names)} reaction endpoints on the reference")
            spec = OptimiseSpec(reference=self.protocol.reference, fmax_eV_per_A=settings.fmax_eV_per_A,
                                max_steps=settings.endpoint_max_steps, fixed_atoms=self.fixed)
            ends = {(n, k): self.engine.submit(spec, [bands[n][k]]) for n in names for k in (0, -1)}
            wait(ends.values())
            for (n, k), f in ends.items():
                if f.exception() is None:
                    bands[n][k] = f.result().final
                    relaxed[n].append(f.result())
                else:
                    self.progress.log(f"validation: reference relaxation of a {n} endpoint failed: {f.exception()}")
                    end_errors[n].append(str(f.exception()))
        futures = {}
        for n in names:
            spec = self._neb_spec(reference=self.protocol.reference, fmax_eV_per_A=settings.fmax_eV_per_A,
                                  max_steps=settings.max_steps, climb=True)
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
                          "endpoint_errors": end_errors[rname],  # an end whose relaxation failed stays the MLFF's
                          "endpoint_relaxation": [{"steps": o.steps, "converged": o.converged,
                                                   "fmax_eV_per_A": o.fmax_eV_per_A} for o in relaxed[rname]],
                          "reference_calls": res.energy_evaluations + ends_calls}
            self._validation_images[rname] = res
        return out

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        if 0 not in self.protocol.blocks and self.campaign.model is None:
            self.campaign.retrain("initial")  # block 0 makes the first model; without it, train here
        for k, number in enumerate(self.protocol.blocks, start=1):
            block = BLOCKS[number]
            self.progress.set_context(f"block {number} ({k} of {len(self.protocol.blocks)}, {block.name})")
            self._finish(block.run(self, block.name, block.params(self.protocol)))
        self.progress.set_context("validation")
        validation = self.validate() if self.protocol.validation.enabled and self.paths else {}
        barriers = barrier_table([r.name for r in self.protocol.reactions], self.barriers, validation)
        summary = {"blocks": self.reports, "barriers": barriers, "validation": validation,
                   "adsorption": self._adsorption_summary(barriers),
                   "training_set_size": self.store.count(), "model": self.campaign.model.model_dump(mode="json")}
        self._write_paths(validation)
        self._report({"name": self.protocol.name, **summary})
        return summary

    def _write_paths(self, validation: dict):
        """paths/<reaction>.xyz: the final MLFF band (MLFF and reference energies per image), and
        paths/<reaction>.validation.xyz: the reference NEB started from it."""

        def save(name: str, images: list[Atoms], info: dict[str, list], energies: list | None = None,
                 forces: list | None = None):
            self.store.write_xyz(f"paths/{name}", band_frames(images, info, energies, forces))

        for rname, path in self.paths.items():
            row = self.barriers.get(rname, {})
            save(f"{rname}.xyz", path["images"], {"energy_mlff_eV": path["energies_eV"],
                                                 "energy_reference_eV": row.get("reference_energies_eV")},
                 path["energies_eV"], path.get("forces_eV_per_A"))
            if rname in self._validation_images:
                ref = self._validation_images[rname]
                save(f"{rname}.validation.xyz", ref.images,
                     {"energy_reference_eV": validation[rname]["reference_energies_eV"]}, ref.energies_eV,
                     ref.forces_eV_per_A)

    def _report(self, summary: dict):
        from . import report

        training_set = self.store.training_set()
        report.write_report(self.store, summary=summary, training_set=training_set, neb_history=self.neb_history,
                            paths=self.paths,
                            parity_data=report.evaluate_training_set(self.engine, self.campaign.model, training_set))


def barrier_table(reactions: list[str], barriers: dict[str, dict], validation: dict[str, dict]) -> list[dict]:
    """summary.json's `barriers`: per reaction the MLFF barrier, the reference one and the error.

    The reference barrier is the validation's when there is one. A validation NEB that stopped at its
    step budget is not a reference barrier: its value is kept, flagged `validation_converged: false`,
    and the difference to it goes to `abs_error_vs_unconverged_eV`, never to `abs_error_eV`."""
    rows = []
    for name in reactions:
        b = barriers.get(name)
        if b is None:
            continue
        v = validation.get(name, {})
        ref = v.get("reference_barrier_eV", b["reference_barrier_eV"])
        converged = v.get("converged") if "steps" in v else None  # None: no validation NEB result
        diff = abs(b["mlff_barrier_eV"] - ref) if ref is not None else None
        rows.append({"reaction": name, "permutations_screened": b["permutations_screened"],
                     "mlff_barrier_eV": b["mlff_barrier_eV"], "reference_barrier_eV": ref,
                     "abs_error_eV": diff if converged is not False else None,
                     "abs_error_vs_unconverged_eV": diff if converged is False else None,
                     "validation_converged": converged, "validation_steps": v.get("steps"),
                     "validation_step0_fmax_eV_per_A": v.get("reference_fmax_step0_eV_per_A")})
    return rows


# ---------------------------------------------------------------------------------------------- blocks


def plan_initial(protocol, system, params) -> str:
    molecules = [n for n in gas_references(protocol, system) if not adsorption.is_atom(n)]
    relax = f"; gas references {', '.join(molecules)} relaxed on the reference" if molecules else ""
    return (f"{len(system.elements)} isolated atoms + bulk + {params.n_rattled} rattled/deformed cells "
            f"-> singlepoint{relax}; train")


def initial_set(cat: Catalysis, name: str, params) -> BlockReport:
    """Block 0: isolated atoms (E0s), the bulk cell and rattled + deformed copies of it; then the first
    fit. And the gas references relaxed on the reference (their μ refer the adsorption energies): every
    step of a relaxation and the single point after it are reference calls of this block."""
    cat.progress.set_stage(f"block 0 ({name}): labelling the initial set")
    relaxing = cat._relax_gas(params)  # the molecules relax while the rest is labelled
    labelled, isolated = [], None
    if params.isolated_atoms:
        isolated = cat.campaign.label(build.isolated_atoms(cat.system.elements, params.isolated_box_A), block=name,
                                      iteration=0, reason="isolated atom", config_type=ISOLATED_ATOM)
        labelled.append(isolated)
    labelled.append(cat.campaign.label([cat.system.bulk], block=name, iteration=0, reason="bulk"))
    rattled = build.rattled_bulk(cat.system.bulk, params.n_rattled, params.rattle_sigma_A, params.strain_sigma,
                                 cat.protocol.seed)
    labelled.append(cat.campaign.label(rattled, block=name, iteration=0, reason="rattled + deformed bulk"))
    wait(relaxing.values())
    gas_calls = cat._gas_energies(params, relaxing, isolated)
    cat.campaign.retrain(f"{name}-0")
    report = BlockReport(name, criterion="initial set (no iteration)", termination_met=True)
    report.count(*labelled)
    report.reference_calls += gas_calls
    return report


def md_block(cat: Catalysis, name: str, structures: list[Atoms], params, fixed: list[int],
             label_first: str | None = None) -> BlockReport:
    """MD on `structures` until no full run breaches σ_thr. With `label_first` (the labels' reason) the
    structures themselves are labelled and fitted before any MD."""
    first = None
    if label_first:
        first = cat.campaign.label(structures, block=name, iteration=0, reason=label_first)
        cat.campaign.retrain(f"{name}-0")
    report = cat.campaign.md_block(name, structures, cat._md_settings(params, fixed), params.max_iterations)
    if first is not None:
        report.count(first)
    return report


def plan_bulk_md(protocol, system, params) -> str:
    return f"md ({params.md_steps} steps) on the bulk until no breach; ≤ {params.max_iterations} iterations"


def bulk_md(cat: Catalysis, name: str, params) -> BlockReport:
    return md_block(cat, name, [cat.system.bulk], params, fixed=[])


def plan_surface_md(protocol, system, params) -> str:
    return f"md ({params.md_steps} steps) on slab and active site; ≤ {params.max_iterations} iterations"


def surface_md(cat: Catalysis, name: str, params) -> BlockReport:
    # the slabs as built are labelled first: σ of a model that has seen only bulk can stay under σ_thr
    # on a surface it has never been shown, and then the surface would never be labelled
    structures = ([cat.system.slab] if params.clean_slab else []) + [cat.system.site_slab]
    return md_block(cat, name, structures, params, fixed=[], label_first="slab" if params.label_slabs else None)


def dimer_pairs(system, params) -> list[tuple[str, str]]:
    return sampling.dimer_pairs(system.elements, system.adsorbate_elements(),
                                with_surface=params.dimer_pairs == "adsorbate_surface")


def placements(system, snapshots: list[Atoms], params, rng: np.random.Generator) -> list[Atoms]:
    """Each intermediate's adsorbate placed near the active site of every snapshot; of those candidates,
    `params.fps_per_intermediate` per intermediate by farthest-point sampling of the adsorbate atoms'
    SOAP environments (block 3's parameters)."""
    n_slab = len(system.site_slab)
    placed = []
    for inter in system.intermediates.values():
        candidates = []
        for snap in snapshots:
            candidates += sampling.place_adsorbate(snap, inter[n_slab:], system.site_position,
                                                   params.placements_per_snapshot, params.placement_radius_A, rng=rng)
        centres = [list(range(n_slab, len(c))) for c in candidates]
        keep = sampling.fps_structures(candidates, params.fps_per_intermediate, system.elements, centres,
                                       cutoff_A=params.soap_cutoff_A, l_max=params.soap_l_max, n_max=params.soap_n_max)
        placed += [candidates[k] for k in keep]
    return placed


def plan_adsorbate_seed(protocol, system, params) -> str:
    pairs = dimer_pairs(system, params)
    return (f"{params.dimers_per_pair * len(pairs)} dimers ({params.dimers_per_pair} "
            f"each for {', '.join('-'.join(p) for p in pairs)}), "
            f"{params.fps_per_intermediate} FPS placements per intermediate, then md")


def adsorbate_seed(cat: Catalysis, name: str, params) -> BlockReport:
    """Block 3: dimers of every element pair (the shortest at the force limit, down-weighted), adsorbates
    placed on MLFF snapshots of the active site, the approximate intermediates; then MD on the placements."""
    cat.progress.set_stage(f"block 3 ({name}): dimers and placements")
    probed: list[Atoms] = []  # the spacing search's reference calls belong to this block

    def probe(atoms: Atoms) -> np.ndarray:
        probed.append(atoms)
        return cat._reference_forces(atoms)

    dimers = sampling.make_dimers(probe, cat.system.elements, params.dimers_per_pair,
                                  params.dimer_max_force_eV_per_A, params.dimer_max_distance_A, params.dimer_box_A,
                                  params.dimer_weight, pairs=dimer_pairs(cat.system, params))
    labelled = [cat.campaign.label(dimers, block=name, iteration=0, reason="dimer", energy_weight=params.dimer_weight,
                                   force_weight=params.dimer_weight, config_type="dimer")]
    # MLFF MD on the active site first (block-2 potential), then place intermediates on its snapshots
    placed = placements(cat.system, cat._site_snapshots(params), params, np.random.default_rng(cat.protocol.seed))
    labelled.append(cat.campaign.label(placed, block=name, iteration=0, reason="placement"))
    labelled.append(cat.campaign.label(list(cat.system.intermediates.values()), block=name, iteration=0,
                                       reason="approximate intermediate"))
    cat.campaign.retrain(f"{name}-0")
    report = cat.campaign.md_block(name, placed, cat._md_settings(params, cat.fixed), params.max_iterations)
    report.count(*labelled)
    report.reference_calls += len(probed)
    return report


def plan_adsorbate_md(protocol, system, params) -> str:
    return f"md ({params.md_steps} steps) on {len(system.intermediates)} intermediates"


def adsorbate_md(cat: Catalysis, name: str, params) -> BlockReport:
    return md_block(cat, name, list(cat.system.intermediates.values()), params, fixed=cat.fixed)


def plan_geometry(protocol, system, params) -> str:
    return (f"optimise {len(system.intermediates)} intermediates and the site slab, label minima until reference "
            f"fmax < {params.fmax_criterion_eV_per_A} eV/Å")


def geometry_optimisation(cat: Catalysis, name: str, params) -> BlockReport:
    """Block 5: MLFF minima of the intermediates, labelled until the reference's largest force on them
    is under the criterion."""
    report = BlockReport(name, criterion="max reference force on MLFF minima (eV/Å) < "
                                         f"{params.fmax_criterion_eV_per_A}")
    start = {n: a.copy() for n, a in cat.system.intermediates.items()}
    # the bare site slab is a minimum like the intermediates: every adsorption energy subtracts it,
    # so it is relaxed, labelled and held to the same criterion (one slab, cheap beside them)
    start[SITE_SLAB] = cat.system.site_slab.copy()
    fixed = set(cat.fixed)
    for iteration in range(1, params.max_iterations + 1):
        cat.progress.set_stage(f"iteration {iteration} of {params.max_iterations}, optimising {len(start)} "
                               "minima")
        # an optimisation is interrupted like an MD when σ breaches σ_thr (thesis §3.2): that
        # configuration is labelled instead of a minimum the model does not know
        spec = cat._optimise_spec(stop_on_breach=True)
        outcomes = {iname: then(cat.engine.submit(spec, [atoms]),
                                partial(_label_minimum, cat, name=name, intermediate=iname, iteration=iteration))
                    for iname, atoms in start.items()}
        wait(outcomes.values())
        forces, breached, e_mlff, e_ref = {}, {}, {}, {}
        for iname, outcome in outcomes.items():
            if outcome.result() is None:
                continue
            result, labels = outcome.result()
            breached[iname] = result.breached
            if not result.breached:
                cat.minima[iname] = result.final
                e_mlff[iname] = result.energy_eV  # a breached run stopped short of a minimum: no E_ads
            report.count(labels)
            (reference,) = labels.results()
            if reference is not None:
                if not result.breached:
                    e_ref[iname] = reference.energy_eV
                F = np.asarray(reference.forces_eV_per_A)
                free = [i for i in range(len(F)) if i not in fixed]
                forces[iname] = float(np.linalg.norm(F[free], axis=1).max())
        worst = max(forces.values()) if forces else float("inf")
        report.iterations, report.criterion_value = iteration, worst
        cat.progress.log(f"{name} iteration {iteration}: reference max force on the MLFF minima "
                         + ", ".join(f"{n} {v:.2f}" for n, v in sorted(forces.items())) + " eV/Å")
        report.history.append({"iteration": iteration, "max_ref_force_eV_per_A": forces,
                               "breached": sorted(n for n, b in breached.items() if b)})
        # the labels of the minima are the reference energies of Supp. Fig. 1: no further calls
        cat._record_adsorption(name, iteration, e_mlff, e_ref)
        report.termination_met = bool(len(forces) == len(start) and not any(breached.values())
                                      and worst < params.fmax_criterion_eV_per_A)  # numpy's bool is no JSON
        cat.progress.log(report.status_line(params.max_iterations))
        if report.termination_met:
            break
        # continue from the last sane minimum (a breached run restarts where it started)
        start = {n: cat.minima.get(n, a) for n, a in start.items()}
        cat.campaign.retrain(f"{name}-{iteration}")
    return report


def _label_minimum(cat: Catalysis, f: Future, *, name: str, intermediate: str, iteration: int):
    """Runs once an optimisation ends: its result and the label of its last structure (None if it failed)."""
    if f.exception() is not None:
        cat.progress.log(f"{name}: optimisation of {intermediate} failed: {f.exception()}")
        return None
    result = f.result()
    labels = cat.campaign.label([result.final], block=name, iteration=iteration,
                                reason="threshold breach" if result.breached else "final geometry")
    return result, labels


def plan_neb(protocol, system, params) -> str:
    path = (f" and the reference force across the band < {params.path_fmax_criterion_eV_per_A} eV/Å"
            if params.path_fmax_criterion_eV_per_A is not None else "")
    screen = (f"{params.screen_steps} non-climbing steps per permutation, the full neb for the lowest and those "
              f"within {params.screen_margin_eV} eV" if params.screen_steps else "full neb per permutation")
    return (f"neb ({params.n_images} images): {screen}; until |ΔE| < "
            f"{params.energy_criterion_eV * 1000:.0f} meV{path}")


def neb(cat: Catalysis, name: str, params) -> BlockReport:
    """Block 6: MLFF NEBs of every reaction over its like-atom permutations; the lowest path's images are
    labelled until the MLFF energies on them agree with the reference and, with a path criterion, the
    reference forces across the band are small (the band is the reference's path, not one beside it).
    `criterion_value` is the energy error; each iteration's history holds both."""
    path_thr = params.path_fmax_criterion_eV_per_A
    report = BlockReport(name, criterion="max |E_MLFF − E_ref| on sampled images (eV) < "
                                         f"{params.energy_criterion_eV}" + (
                                             "" if path_thr is None else " and max reference force across the "
                                             f"band on them (eV/Å) < {path_thr}"))
    reactions = cat.protocol.reactions
    ends = {n: cat.minima.get(n, a) for n, a in cat.system.intermediates.items()}
    perms = {}
    for r in reactions:
        idx = cat.system.adsorbate_indices(r.initial)
        perms[r.name] = [order for order, _ in sampling.like_atom_permutations(
            ends[r.initial], ends[r.final], idx, params.permutation_limit, params.permutations_kept)]
    # interpolated images between every reaction's endpoints, before iterating (thesis §3.3)
    if params.interpolated_images:
        images = []
        for r in reactions:
            final = sampling.apply_order(ends[r.final], perms[r.name][0])
            images += sampling.interpolated_images(ends[r.initial], final, params.interpolated_images)
        interpolated = cat.campaign.label(images, block=name, iteration=0, reason="interpolated image")
        cat.campaign.retrain(f"{name}-0")
        report.count(interpolated)
    active = {rname: list(range(len(p))) for rname, p in perms.items()}
    strikes: dict[str, dict[int, int]] = {}
    site = cat.minima.get(SITE_SLAB, cat.system.site_slab)
    for iteration in range(1, params.max_iterations + 1):
        cat.progress.set_stage(f"iteration {iteration} of {params.max_iterations}, NEBs over "
                               f"{sum(len(v) for v in active.values())} permutation(s)")
        # the site slab relaxes with the ends; with the model of this iteration's NEBs, so they give its
        # adsorption energies. The band ends are not labelled (label_endpoints), so the relaxed minima are
        # labelled here, concurrently with the NEBs: the reference side of those adsorption energies, and
        # minima of the newest model as training data
        relaxed = cat._relax_ends({**ends, SITE_SLAB: site})
        site = relaxed[SITE_SLAB].final if relaxed[SITE_SLAB] is not None else site
        ends = {n: r.final if r is not None else ends[n] for n, r in relaxed.items() if n != SITE_SLAB}
        done = {n: r for n, r in relaxed.items() if r is not None}
        minima = cat.campaign.label([r.final for r in done.values()], block=name, iteration=iteration,
                                    reason="relaxed minimum")
        errors, path_forces, row, labelled, screens = cat._neb_iteration(name, iteration, ends, perms, active)
        labelled.append(minima)
        cat._record_adsorption(name, iteration, {n: r.energy_eV for n, r in done.items()},
                               {n: res.energy_eV for n, res in zip(done, minima.results()) if res is not None})
        # a permutation far above the lowest band for DROP_AFTER iterations in a row is screened no more
        for rname, screened in sorted(screens.items()):
            strikes[rname] = screening.strikes_after(strikes.get(rname, {}), screened.screened_max_eV,
                                                     screened.lowest(), params.drop_margin_eV)
            kept = screening.kept(active[rname], strikes[rname])
            if dropped := sorted(set(active[rname]) - set(kept)):
                cat.progress.log(f"block 6: {rname} permutation(s) {dropped} dropped: their bands stayed more "
                                 f"than {params.drop_margin_eV} eV above the lowest")
            active[rname] = kept
        report.count(*labelled)
        worst = max(errors) if errors else float("inf")
        across = max(path_forces.values()) if path_forces else float("inf")
        report.iterations, report.criterion_value = iteration, worst
        report.history.append({"iteration": iteration, "max_abs_energy_error_eV": worst,
                               "max_reference_perpendicular_fmax_eV_per_A": across, "barriers": row})
        cat.neb_history.append({"iteration": iteration, **row})
        on_path = path_thr is None or across < path_thr
        report.termination_met = bool(errors and worst < params.energy_criterion_eV and on_path
                                      and len(row) == len(reactions))  # numpy's bool is no JSON
        cat.progress.log(report.status_line(params.max_iterations)
                         + ("" if path_thr is None else f"; reference force across the band {across:.3g} eV/Å"))
        if report.termination_met:
            break
        cat.campaign.retrain(f"{name}-{iteration}")
    return report


# The protocol, in the order of the thesis. Names come from schemas/protocol.py BLOCK_NAMES (the
# protocol's `blocks:` is validated against them); parameters are the sections of its `parameters:`.
BLOCKS: dict[int, Block] = {b.number: b for b in (
    Block(0, "initial", "b0_initial", plan_initial, initial_set),
    Block(1, "bulk MD", "b1_bulk", plan_bulk_md, bulk_md),
    Block(2, "surface MD", "b2_surface", plan_surface_md, surface_md),
    Block(3, "adsorbate seed + MD", "b3_adsorbate_seed", plan_adsorbate_seed, adsorbate_seed),
    Block(4, "adsorbate MD", "b4_adsorbate_md", plan_adsorbate_md, adsorbate_md),
    Block(5, "geometry opt.", "b5_geometry", plan_geometry, geometry_optimisation),
    Block(6, "NEB", "b6_neb", plan_neb, neb),
)}


def run(protocol, engine, store, progress) -> dict:
    return Catalysis(protocol, engine, store, progress).run()
