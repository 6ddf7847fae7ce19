"""Transfer of a catalysis run's training set to MACE (thesis §3.5, Fig. 3.9), read beside it.

training set  the labels of the finished run that its final GAP was fitted on (imported with their provenance,
              Campaign.import_labels; the GAP's models/<block>-<iteration> folder says which), a MACE (a
              committee when committee_size > 1) fitted to them with mace_run_train: no new data
barriers      per validated reaction, the run's reference band (paths/<reaction>.validation.xyz): a
              climbing-image NEB started from it with the MACE and with the GAP (the run's block-6 settings,
              the `neb` task), and both models' energies on its images as they are; each barrier against the
              validation's reference barrier (flagged where that reference NEB did not converge)
adsorption    E_ads = E(slab + X) − E(site slab) − Σ n μ (workflows/adsorption.py) for every intermediate at
              the end of a validated band, relaxed on the reference by the run: the reference's from those
              minima and the site slab relaxed on the reference here; a model's from its own minima (each
              relaxed with the model from the reference's, block 5's settings); μ the reference's for both
              (the run's summary, else its gas references relaxed here, as exploration does)
dopant        optional: labelled frames of the run holding its site slab, chosen by FPS on average SOAP; the
              slab's metal atom nearest the active site replaced by the dopant, every atom rattled, labelled
              with the run's reference (a failed calculation is discarded); a part held out of every fit
              (transfer/dopant_held_out.xyz, not in labels.db), the rest added to a second MACE fit; both
              MACE fits scored on the held-out frames. The first fit knows the dopant's free atom (its E0)
              only, so it can evaluate the element it has never seen in an environment
output        summary.json `transfer`, report/transfer.png (barriers, and E_ads of both models against the
              reference's)
"""
from __future__ import annotations

import json
from concurrent.futures import wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms
from ase.geometry import find_mic
from ase.io import read
from reactforge.engine.futures import settled
from reactforge.schemas.tasks import ISOLATED_ATOM, EvaluateSpec, ModelRef, OptimiseSpec, SinglePointSpec, TrainSpec

from . import adsorption
from .active_learning import Campaign

BLOCK = "transfer"  # the models' names
DOPANT_BLOCK = "transfer-dopant"  # the doped labels' block name

# Elements that are not metals; every other element of a slab is a metal a dopant can replace.
NONMETALS = frozenset({"H", "He", "B", "C", "N", "O", "F", "Ne", "Si", "P", "S", "Cl", "Ar", "Ge", "As", "Se", "Br",
                       "Kr", "Sb", "Te", "I", "Xe", "At", "Rn"})


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class Source:
    """What the finished run gives: its directory, catalysis protocol, final GAP, validated reactions (their
    reference bands and validation entries) and the reactions left out, with why."""

    run_dir: Path
    catalysis: object  # schemas.protocol.Protocol
    gap: ModelRef
    bands: dict[str, list[Atoms]]
    validation: dict[str, dict]
    skipped: dict[str, str] = field(default_factory=dict)
    mu: dict[str, float] | None = None


def read_source(protocol) -> Source:
    """The run, checked: a ValueError names the field `run` for anything missing that the transfer needs."""
    from reactforge.schemas.loading import load_protocol
    from reactforge.schemas.protocol import Protocol

    from .free_energy import _run_model

    run_dir = protocol.resolve(protocol.run)
    if not run_dir.is_dir():
        raise ValueError(f"field 'run': no such run directory {run_dir}")
    run_dir = run_dir.resolve()
    if not (run_dir / "protocol.yaml").is_file():
        raise ValueError(f"field 'run': {run_dir} is not a run directory (no protocol.yaml)")
    if not (run_dir / "labels.db").is_file():
        raise ValueError(f"field 'run': {run_dir} has no labels (no labels.db)")
    catalysis = load_protocol(run_dir / "protocol.yaml", Protocol)
    try:
        gap = _run_model(run_dir)
    except ValueError as err:  # its messages start with "run: "
        raise ValueError(f"field 'run': {str(err).removeprefix('run: ')}") from None
    summary = json.loads((run_dir / "summary.json").read_text())
    validation = summary.get("validation") or {}
    bands, used, skipped = {}, {}, {}
    for r in catalysis.reactions:
        v, path = validation.get(r.name) or {}, run_dir / "paths" / f"{r.name}.validation.xyz"
        if v.get("reference_barrier_eV") is None or not path.is_file():
            skipped[r.name] = v.get("error") or "no reference NEB in the run's validation"
            continue
        bands[r.name], used[r.name] = read(path, ":"), v
    if not bands:
        raise ValueError(f"field 'run': {run_dir} has no validated reaction (summary.json 'validation' and "
                         "paths/<reaction>.validation.xyz): the transfer compares against its reference NEBs")
    mu = (summary.get("adsorption") or {}).get("chemical_potentials_eV")
    return Source(run_dir, catalysis, gap, bands, used, skipped, mu)


def fitted_labels(labels: list[Atoms], model_name: str) -> list[Atoms]:
    """The labels a run's fit `model_name` (its models/ folder, <block>-<iteration>) was trained on: every
    label of the blocks before that block and that block's up to that iteration. Block 6 checks the labels of
    its last iteration without refitting when they meet its criterion, so those are not the final GAP's. A
    name of another form (`initial`) stands for all labels."""
    from reactforge.schemas.protocol import BLOCK_NAMES

    order = {name: number for number, name in BLOCK_NAMES.items()}
    block, _, iteration = model_name.rpartition("-")
    if block not in order or not iteration.isdigit():
        return list(labels)
    last = (order[block], int(iteration))
    return [a for a in labels if (order.get(a.info.get("block"), len(order)), int(a.info.get("iteration", 0))) <= last]


def model_spec(protocol):
    """The MACE spec, a foundation model's or replay file's name resolved against the protocol's folder."""
    m = protocol.mace
    update = {k: str(protocol.resolve(getattr(m, k)).resolve()) for k in ("foundation_model", "replay_file")
              if getattr(m, k) is not None}
    return m.model_copy(update=update)


def _check_dopant(protocol, source: Source, system) -> str:
    """ValueError naming `dopant.element` when the dopant cannot stand in for the site's metal; the plan's line."""
    d = protocol.dopant
    n_site = len(system.site_slab)
    metal = nearest_metal(system.site_slab, system.site_position, n_site)
    if metal is None:
        raise ValueError("field 'dopant': the site slab has no metal atom to replace")
    symbol = system.site_slab[metal].symbol
    if d.element == symbol:
        raise ValueError(f"field 'dopant.element': {d.element} is the metal it would replace (atom {metal})")
    reference = source.catalysis.reference
    if reference.code == "emt":
        from ase.calculators.emt import parameters

        if d.element not in parameters:
            raise ValueError(f"field 'dopant.element': the run's reference, EMT, has no parameters for "
                             f"{d.element} (it has {', '.join(sorted(parameters))})")
    n_held = held_out_count(d.configurations, d.held_out_fraction)
    return (f"dopant: {d.configurations} labelled frames holding the site slab (FPS on average SOAP), the metal "
            f"nearest the site ({symbol}, atom {metal} of the slab as built) replaced by {d.element}, rattled "
            f"{d.rattle_A} Å, labelled with {reference.code}; {n_held} held out; MACE fitted without and with the "
            f"other {d.configurations - n_held}, force RMSE of both on the held-out frames")


def held_out_count(n: int, fraction: float) -> int:
    return min(n - 1, max(1, round(fraction * n)))


def neb_settings(protocol, catalysis) -> tuple[float, int]:
    """The models' NEB fmax and step budget: the transfer protocol's `evaluation`, else the run's block 6."""
    e, b6 = protocol.evaluation, catalysis.parameters.b6_neb
    return e.neb_fmax_eV_per_A or b6.mlff_fmax_eV_per_A, e.neb_max_steps or b6.max_steps


def relax_settings(protocol, catalysis) -> tuple[float, int]:
    """The models' relaxation fmax and step budget: the transfer protocol's `evaluation`, else the run's block 5."""
    e, b5 = protocol.evaluation, catalysis.parameters.b5_geometry
    return e.relax_fmax_eV_per_A or b5.mlff_fmax_eV_per_A, e.relax_max_steps or b5.max_steps


def plan(protocol) -> list[str]:
    from .catalysis_build import build_system

    source = read_source(protocol)
    system = build_system(source.catalysis)
    m = protocol.mace
    neb_fmax, neb_steps = neb_settings(protocol, source.catalysis)
    relax_fmax, relax_steps = relax_settings(protocol, source.catalysis)
    lines = [(f"run {source.run_dir}: reference {source.catalysis.reference.code}, final GAP "
              f"{Path(source.gap.paths[0]).parent.name}"),
             (f"MACE: {m.committee_size} member(s), {m.hidden_irreps}, r_max {m.r_max_A} Å, {m.num_interactions} "
              f"interactions, ≤ {m.max_num_epochs} epochs, on the labels the final GAP was fitted on"),
             (f"barriers: {', '.join(source.bands)}: climbing-image NEB with MACE and GAP from the reference band "
              f"(fmax {neb_fmax} eV/Å, ≤ {neb_steps} steps) "
              "and single points on its images, against the validation's reference barrier")]
    unconverged = [f"{n} ({v.get('steps')} steps)" for n, v in source.validation.items() if v.get("converged") is False]
    if unconverged:
        lines.append(f"reference NEBs that stopped at their step budget (their barriers flagged): {', '.join(unconverged)}")
    if source.skipped:
        lines.append(f"not compared (no reference NEB): {', '.join(source.skipped)}")
    names = ends(source)
    lines.append(f"adsorption energies: {', '.join(names)} at the reference minima; each model relaxes them and "
                 f"the site slab (fmax {relax_fmax} eV/Å, ≤ {relax_steps} steps); μ the reference's ("
                 + ("the run's" if source.mu else "its gas references relaxed here") + ")")
    lines.append(_check_dopant(protocol, source, system) if protocol.dopant is not None else "dopant: off")
    return lines


def ends(source: Source) -> dict[str, tuple[str, int]]:
    """Per intermediate, the reaction and band end (0 or -1) whose reference minimum stands for it (its first)."""
    out = {}
    for r in source.catalysis.reactions:
        if r.name in source.bands:
            out.setdefault(r.initial, (r.name, 0))
            out.setdefault(r.final, (r.name, -1))
    return out


# ---------------------------------------------------------------------------------------------- the dopant


def nearest_metal(atoms: Atoms, site_position, n_slab: int, exclude: str | None = None) -> int | None:
    """Index of the slab's (first n_slab atoms') metal atom nearest the site position (minimum image), lowest
    index among equals; None without one. `exclude`: an element not counted (the dopant itself)."""
    metals = [i for i in range(n_slab) if atoms[i].symbol not in NONMETALS and atoms[i].symbol != exclude]
    if not metals:
        return None
    d, _ = find_mic(atoms.positions[metals] - np.asarray(site_position), atoms.cell, atoms.pbc)
    dist = np.linalg.norm(d, axis=1)
    return metals[int(np.argmin(np.round(dist, 8)))]


def dope(frames: list[Atoms], site_position, n_slab: int, element: str, rattle_A: float,
         rng: np.random.Generator) -> list[tuple[Atoms, int]]:
    """Copies of the frames with the slab's metal atom nearest the site (in the frame as it is) replaced by
    `element`, then every atom the frame's FixAtoms leaves free displaced by N(0, rattle_A²) (the fixed bottom
    stands for the bulk, as in every label of the run); with the replaced index. The frames' labels,
    calculators and provenance are not carried."""
    out = []
    for frame in frames:
        a = plain(frame)
        i = nearest_metal(a, site_position, n_slab, exclude=element)
        if i is None:
            continue
        a[i].symbol = element
        free = np.ones(len(a), dtype=bool)
        free[[j for c in a.constraints for j in c.index]] = False
        a.positions += rng.normal(0.0, rattle_A, a.positions.shape) * free[:, None]
        a.info.update(config_type="dopant", dopant=element, dopant_index=i)
        out.append((a, i))
    return out


def plain(atoms: Atoms) -> Atoms:
    """Numbers, positions, cell, pbc and FixAtoms only: no labels, calculator or provenance."""
    a = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    a.set_constraint([c.copy() for c in atoms.constraints if isinstance(c, FixAtoms)])
    return a


def holds_site_slab(atoms: Atoms, site_slab: Atoms) -> bool:
    """A frame of the site slab (with or without an adsorbate after it): its atoms first, the same cell and
    periodicity."""
    n = len(site_slab)
    return (len(atoms) >= n and atoms.get_chemical_symbols()[:n] == site_slab.get_chemical_symbols()
            and np.allclose(atoms.cell.array, site_slab.cell.array, atol=1e-3) and (atoms.pbc == site_slab.pbc).all())


# ---------------------------------------------------------------------------------------------- the workflow


def run(protocol, engine, store, progress) -> dict:
    return Transfer(protocol, engine, store, progress).run()


class Transfer:
    def __init__(self, protocol, engine, store, progress):
        from .catalysis import Catalysis

        self.p, self.engine, self.store, self.progress = protocol, engine, store, progress
        self.source = read_source(protocol)
        # the run's own objects: its system as built from its protocol, block 5/6 settings, gas references
        self.cat = Catalysis(self.source.catalysis, engine, store, progress)
        self.system, self.fixed = self.cat.system, self.cat.fixed
        self.reference = self.source.catalysis.reference
        self.campaign = Campaign(engine, store, progress, self.reference, model_spec(protocol),
                                 max_force_eV_per_A=protocol.max_force_eV_per_A, seed=protocol.seed)
        self.campaign.import_labels(self.source.run_dir)
        labels = self.store.training_set()
        self.gap_name = Path(self.source.gap.paths[0]).parent.name
        fitted = fitted_labels(labels, self.gap_name)
        self.campaign.labelled = {a.info["task"] for a in fitted}
        self.not_fitted = len(labels) - len(fitted)
        self.fitted = fitted

    # ------------------------------------------------------------------ the dopant's labels
    def dopant_frames(self) -> tuple[list[Atoms], list[Atoms]]:
        """The doped frames, split into (training, held out) by a seeded permutation."""
        from . import sampling

        d = self.p.dopant
        candidates = [a for a in self.fitted if holds_site_slab(a, self.system.site_slab)]
        if len(candidates) < 2:
            raise RuntimeError(f"transfer: the run has {len(candidates)} labelled frame(s) of its site slab; the "
                               "dopant needs at least 2")
        rng = np.random.default_rng(d.seed)
        vectors = sampling.average_soap(candidates, self.system.elements)
        chosen = sampling.farthest_point_sampling(sampling.soap_distances(vectors), d.configurations,
                                                  first=int(rng.integers(len(candidates))))
        doped = [a for a, _ in dope([candidates[k] for k in chosen], self.system.site_position,
                                    len(self.system.site_slab), d.element, d.rattle_A, rng)]
        n_held = held_out_count(len(doped), d.held_out_fraction)
        order = rng.permutation(len(doped))
        return [doped[k] for k in sorted(order[n_held:])], [doped[k] for k in sorted(order[:n_held])]

    def label_held_out(self, frames: list[Atoms]) -> list:
        """Futures of the held-out frames' reference labels (never stored in labels.db)."""
        spec = SinglePointSpec(reference=self.reference, max_force_eV_per_A=self.p.max_force_eV_per_A)
        return [self.engine.submit(spec, [a]) for a in frames]

    def held_out(self, frames: list[Atoms], futures: list) -> list[Atoms]:
        """The held-out frames whose reference label succeeded, labels as REF_ keys, in
        transfer/dopant_held_out.xyz."""
        wait(futures)
        out = []
        for a, f in zip(frames, futures):
            r = settled(f)
            if r is None:
                self.progress.log(f"transfer: a held-out doped label was discarded: {f.exception()}")
                continue
            b = plain(a)  # the frame's FixAtoms: errors are taken over its free atoms
            b.info.update(REF_energy=r.energy_eV, config_type="dopant", dopant_index=a.info["dopant_index"])
            b.arrays["REF_forces"] = np.asarray(r.forces_eV_per_A, dtype=float)
            out.append(b)
        self.store.write_xyz(f"{BLOCK}/dopant_held_out.xyz", out)
        return out

    # ------------------------------------------------------------------ models on the reference's structures
    def _relax(self, model: ModelRef, atoms: Atoms):
        fmax, steps = relax_settings(self.p, self.cat.protocol)
        spec = OptimiseSpec(model=model, fmax_eV_per_A=fmax, max_steps=steps,
                            optimizer=self.cat.protocol.parameters.b5_geometry.optimizer, fixed_atoms=self.fixed)
        return self.engine.submit(spec, [plain(atoms)])

    def _neb(self, model: ModelRef, band: list[Atoms]):
        fmax, steps = neb_settings(self.p, self.cat.protocol)
        spec = self.cat._neb_spec(model=model, climb=True, n_images=len(band) - 2, fmax_eV_per_A=fmax,
                                  max_steps=steps)
        return self.engine.submit(spec, [plain(a) for a in band])

    def submit_model(self, key: str, model: ModelRef, site_reference=None, bands: bool = True) -> dict:
        """A model's NEBs and single points on each reference band (`bands`), and its relaxation of and single
        points on the reference minima (the site slab's once its reference relaxation is there), all submitted
        at once: {(model, what, name): future}."""
        futures = {}
        if bands:
            for rname, band in self.source.bands.items():
                futures[(key, "neb", rname)] = self._neb(model, band)
                futures[(key, "band", rname)] = self.engine.submit(EvaluateSpec(model=model), [plain(a) for a in band])
        minima = self.minima(site_reference)
        if site_reference is not None:
            minima = {adsorption.SITE_SLAB: minima[adsorption.SITE_SLAB]}
        for name, atoms in minima.items():
            futures[(key, "relax", name)] = self._relax(model, atoms)
        futures[(key, "minima" if site_reference is None else "site", None)] = self.engine.submit(
            EvaluateSpec(model=model), [plain(a) for a in minima.values()])
        return futures

    def minima(self, site_reference) -> dict[str, Atoms]:
        """The reference minima: each intermediate's band end and, where its reference relaxation succeeded, the
        site slab."""
        out = {n: self.source.bands[rname][k] for n, (rname, k) in ends(self.source).items()}
        if site_reference is not None:
            out[adsorption.SITE_SLAB] = site_reference.final
        return out

    # ------------------------------------------------------------------ tables
    def barriers(self, futures: dict, models: list[str]) -> list[dict]:
        rows = []
        for rname, band in self.source.bands.items():
            v = self.source.validation[rname]
            ref = float(v["reference_barrier_eV"])
            row = {"reaction": rname, "reference_eV": ref, "reference_converged": v.get("converged"),
                   "images": len(band)}
            for key in models:
                neb, points = settled(futures[(key, "neb", rname)]), settled(futures[(key, "band", rname)])
                if neb is None:
                    self.progress.log(f"transfer: the {key} NEB of {rname} failed: {futures[(key, 'neb', rname)].exception()}")
                barrier = neb.forward_barrier_eV if neb is not None else None
                single = (max(points.energies_eV) - points.energies_eV[0]) if points is not None else None
                row.update({f"{key}_eV": barrier, f"{key}_error_eV": None if barrier is None else barrier - ref,
                            f"{key}_neb_converged": neb.converged if neb is not None else None,
                            f"{key}_neb_steps": neb.steps if neb is not None else None,
                            f"{key}_singlepoint_eV": single,
                            f"{key}_singlepoint_error_eV": None if single is None else single - ref})
            rows.append(row)
        return rows

    def adsorption(self, futures: dict, models: list[str], site_reference, mu) -> dict:
        """Per intermediate: the reference's E_ads and each model's (relaxed, and on the reference minimum),
        with errors; and the mean absolute errors (meV)."""
        names = ends(self.source)
        reference = {n: float(self.source.validation[r]["reference_energies_eV"][k]) for n, (r, k) in names.items()}
        site_ref = site_reference.energy_eV if site_reference is not None else None
        adsorbates = {n: self.cat.adsorbates[n] for n in names}
        table = {n: {"from": f"{r} {'initial' if k == 0 else 'final'}", "reference_eV": None} for n, (r, k) in names.items()}
        mae = {}
        for key in models:
            relaxed = {n: settled(futures[(key, "relax", n)]) for n in [*names, adsorption.SITE_SLAB]
                       if (key, "relax", n) in futures}
            energies = {n: r.energy_eV for n, r in relaxed.items() if r is not None}
            single = {}
            for what, reference_minima in (("minima", self.minima(None)), ("site", {adsorption.SITE_SLAB: None})):
                points = settled(futures[(key, what, None)]) if (key, what, None) in futures else None
                if points is not None:
                    single.update(zip(reference_minima, points.energies_eV))
            if mu is None:
                continue
            rows = adsorption.adsorption_rows(adsorbates, energies, reference,
                                              (energies.get(adsorption.SITE_SLAB), site_ref), mu)
            at_ref = adsorption.adsorption_rows(adsorbates, single, reference,
                                                (single.get(adsorption.SITE_SLAB), site_ref), mu)
            for n, row in rows.items():
                table[n]["reference_eV"] = row["reference_eV"]
                table[n].update({f"{key}_eV": row["mlff_eV"], f"{key}_error_eV": row["error_eV"],
                                 f"{key}_at_reference_minimum_eV": at_ref[n]["mlff_eV"],
                                 f"{key}_at_reference_minimum_error_eV": at_ref[n]["error_eV"]})
            error = adsorption.mean_absolute_error(rows)
            mae[key] = None if error is None else 1000.0 * error
        return table, mae

    # ------------------------------------------------------------------ the workflow
    def run(self) -> dict:
        d = self.p.dopant
        # reference work first, in the order it is needed: the dopant's free atom (its E0, so that the first MACE
        # can evaluate the element at all), the doped frames, then the site slab relaxed on the reference
        if d is not None:
            from .catalysis_build import isolated_atoms

            b0 = self.cat.protocol.parameters.b0_initial
            self.campaign.label(isolated_atoms([d.element], b0.isolated_box_A), block=DOPANT_BLOCK, iteration=0,
                                reason="isolated atom", config_type=ISOLATED_ATOM)
        dopant = labels = test = test_futures = None
        if d is not None:
            self.progress.set_stage(f"transfer: {d.configurations} frames with {d.element} near the site")
            train, test = self.dopant_frames()
            dopant = Campaign(self.engine, self.store, self.progress, self.reference, self.campaign.model_spec,
                              max_force_eV_per_A=self.p.max_force_eV_per_A, seed=self.p.seed)
            labels = dopant.label(train, block=DOPANT_BLOCK, iteration=1, reason=f"{d.element} near the site",
                                  config_type="dopant")
            test_futures = self.label_held_out(test)
        v = self.cat.protocol.validation
        site = self.engine.submit(OptimiseSpec(reference=self.reference, fmax_eV_per_A=v.fmax_eV_per_A,
                                               max_steps=v.endpoint_max_steps, fixed_atoms=self.fixed),
                                  [plain(self.system.site_slab)])
        # the fits run side by side (the augmented one once its labels are in); the GAP's NEBs and minima fill
        # what they leave free
        self.campaign.wait_labels()
        self.progress.set_stage(f"transfer: MACE on {len(self.campaign.labelled)} labels, the GAP on the reference's "
                                "structures")
        fits = {"mace": self.fit(self.campaign.labelled)}
        futures = self.submit_model("gap", self.source.gap)
        if d is not None:
            dopant.wait_labels()
            if labels.added:
                fits["mace_dopant"] = self.fit(self.campaign.labelled | dopant.labelled)
        mace = self.keep(fits["mace"], f"{BLOCK}-mace")
        n_train = len(self.campaign.labelled)
        futures.update(self.submit_model("mace", mace))
        mu, mu_source = self.chemical_potentials()
        self.progress.set_stage("transfer: NEBs and minima with MACE and the GAP")
        site_reference = settled(site)
        if site_reference is None:
            self.progress.log(f"transfer: the reference relaxation of the site slab failed: {site.exception()}")
        else:
            for key, model in (("gap", self.source.gap), ("mace", mace)):
                futures.update(self.submit_model(key, model, site_reference, bands=False))
        wait(futures.values())
        models = ["mace", "gap"]
        barriers = self.barriers(futures, models)
        table, mae = self.adsorption(futures, models, site_reference, mu)
        for row in barriers:
            self.progress.log(f"transfer: {row['reaction']} barrier reference {row['reference_eV']:.3f} eV, MACE "
                              f"{_fmt(row['mace_eV'])}, GAP {_fmt(row['gap_eV'])}")
        if mae:
            self.progress.log(f"transfer: adsorption energy MAE MACE {_fmt(mae.get('mace'), 0)} meV, GAP "
                              f"{_fmt(mae.get('gap'), 0)} meV")
        dopant_out = (self.dopant_scores(mace, fits.get("mace_dopant"), labels, test, test_futures)
                      if d is not None else None)
        self.store.export_dataset()
        self.figure(barriers, table)
        out = {"model": {"mace": mace.model_dump(mode="json"), "gap": self.source.gap.model_dump(mode="json"),
                         "mace_dopant": dopant_out.pop("model", None) if dopant_out else None},
               "run": str(self.source.run_dir), "gap_model": self.gap_name, "training_set_size": n_train,
               "run_labels_not_fitted_by_gap": self.not_fitted,
               "barriers": barriers, "reactions_not_compared": self.source.skipped,
               "adsorption": table, "mean_abs_adsorption_error_meV": mae,
               "chemical_potentials_eV": mu, "mu_source": mu_source,
               "site_slab_reference_eV": site_reference.energy_eV if site_reference is not None else None,
               "adsorption_definition": ("E_ads = E(slab + adsorbate) − E(site slab) − Σ n μ. A model's uses its own "
                                         "energies of the intermediate and the bare site slab, each relaxed with it "
                                         "from the reference minimum (*_at_reference_minimum: on the reference "
                                         "geometries); μ of the gas phase are the reference's for both models (a "
                                         "surface model is not trained on isolated molecules)"),
               "dopant": dopant_out, "figure": f"report/{BLOCK}.png"}
        return {"transfer": out, "model": mace.model_dump(mode="json")}

    def fit(self, labelled: set[str]):
        """A MACE fit on the labels whose task keys are `labelled`, submitted (a future)."""
        return self.engine.submit(TrainSpec(model=self.campaign.model_spec), self.campaign.training_set(labelled))

    def keep(self, future, name: str) -> ModelRef:
        """A fit's model, its files kept in models/<name>/."""
        return self.campaign.keep(future.result().model, name)

    def chemical_potentials(self):
        """The reference's μ: the run's, else its gas references relaxed here (exploration's way)."""
        from .exploration import run_chemical_potentials

        self.progress.set_stage("transfer: chemical potentials of the gas references")
        return run_chemical_potentials(self.source.run_dir, self.cat)

    def dopant_scores(self, mace: ModelRef, augmented, labels, test: list[Atoms], test_futures) -> dict:
        """Both fits' errors on the held-out doped frames: the MACE on the run's labels and the one on those and
        the doped training frames (`augmented`, a fit's future; None when every doped label was discarded)."""
        d = self.p.dopant
        added = labels.added
        held = self.held_out(test, test_futures)
        out = {"element": d.element, "configurations": labels.calls + len(test), "rattle_A": d.rattle_A,
               "training_labels": added, "training_discarded": labels.failed, "held_out": len(held),
               "held_out_discarded": len(test) - len(held), "held_out_file": f"{BLOCK}/dopant_held_out.xyz",
               "without": None, "with": None, "model": None,
               "fits": ("without: the MACE on the run's labels (it has the dopant's free atom, its E0, and no "
                        "environment of it); with: the same and the doped training labels")}
        if augmented is None:
            self.progress.log("transfer: every doped training label was discarded; no augmented fit")
            return out
        augmented = self.keep(augmented, f"{BLOCK}-mace-dopant")
        out["model"] = augmented.model_dump(mode="json")
        if held:
            for key, model in (("without", mace), ("with", augmented)):
                r = self.engine.run(EvaluateSpec(model=model), held)
                out[key] = rmse(held, r.energies_eV, r.forces_eV_per_A)
            self.progress.log(f"transfer: held-out {d.element}-doped force RMSE without "
                              f"{out['without']['force_rmse_eV_per_A']:.3f}, with "
                              f"{out['with']['force_rmse_eV_per_A']:.3f} eV/Å ({added} doped labels)")
        return out

    # ------------------------------------------------------------------ figure
    def figure(self, barriers: list[dict], table: dict) -> None:
        """(a) each reaction's barrier: reference, MACE and GAP (NEB; single points on the reference band as
        open markers); (b) E_ads of MACE and GAP against the reference's."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax, par) = plt.subplots(1, 2, figsize=(10, 4))
        x = np.arange(len(barriers))
        for k, (key, label, colour) in enumerate((("reference", "reference", "k"), ("mace", "MACE", "C0"),
                                                  ("gap", "GAP", "C1"))):
            values = [r["reference_eV"] if key == "reference" else r[f"{key}_eV"] for r in barriers]
            bars = ax.bar(x + (k - 1) * 0.27, [np.nan if v is None else v for v in values], 0.27, label=label,
                          color=colour)
            if key == "reference":  # a reference NEB that stopped at its step budget: hatched
                for bar, r in zip(bars, barriers):
                    if r["reference_converged"] is False:
                        bar.set(hatch="//", facecolor="white", edgecolor="k")
            if key != "reference":
                ax.scatter(x + (k - 1) * 0.27, [np.nan if r[f"{key}_singlepoint_eV"] is None else
                                                r[f"{key}_singlepoint_eV"] for r in barriers],
                           marker="o", facecolors="none", edgecolors="k", zorder=3,
                           label="single points on the reference band" if k == 1 else None)
        ax.set_xticks(x, [r["reaction"] for r in barriers])
        ax.set_ylabel("barrier (eV)")
        ax.set_title("(a) barriers from the reference band" + (
            "\n(hatched: reference NEB not converged)" if any(r["reference_converged"] is False for r in barriers) else ""))
        ax.legend(fontsize=8)
        points = [(n, r) for n, r in table.items() if r.get("reference_eV") is not None]
        for key, label, colour in (("mace", "MACE", "C0"), ("gap", "GAP", "C1")):
            xy = [(r["reference_eV"], r[f"{key}_eV"]) for _, r in points if r.get(f"{key}_eV") is not None]
            if xy:
                par.scatter(*np.array(xy).T, label=label, color=colour)
        if points:
            ref = [r["reference_eV"] for _, r in points]
            lo, hi = min(ref) - 0.2, max(ref) + 0.2
            par.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            for n, r in points:
                par.annotate(n, (r["reference_eV"], r["reference_eV"]), fontsize=7, xytext=(4, -10),
                             textcoords="offset points")
            par.legend(fontsize=8)
        par.set_xlabel("reference E_ads (eV)")
        par.set_ylabel("model E_ads (eV)")
        par.set_title("(b) adsorption energies")
        fig.tight_layout()
        with self.store.atomic_path(f"report/{BLOCK}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)


def rmse(frames: list[Atoms], energies: list[float], forces: list) -> dict:
    """Force-component RMSE (eV/Å) over the atoms each frame's FixAtoms leaves free (the fixed ones carry zero
    forces in labels and models alike) and per-atom energy RMSE (meV/atom) against the frames' REF_ labels."""
    df, de = [], []
    for a, e, f in zip(frames, energies, forces):
        free = np.ones(len(a), dtype=bool)
        free[[j for c in a.constraints for j in c.index]] = False
        df.append((np.asarray(f) - a.arrays["REF_forces"])[free].ravel())
        de.append((e - a.info["REF_energy"]) / len(a))
    df, de = np.concatenate(df), np.array(de)
    return {"force_rmse_eV_per_A": float(np.sqrt(np.mean(df ** 2))),
            "energy_rmse_meV_per_atom": 1e3 * float(np.sqrt(np.mean(de ** 2))), "frames": len(frames)}


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
