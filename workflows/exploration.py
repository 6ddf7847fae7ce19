"""Adsorbate configuration exploration with the trained MLFF (thesis §3.4.3, Fig. 3.7), read beside it.

starts        per intermediate, block 3's placements around the active site on the bare site slab,
              thinned by FPS on the adsorbate's SOAP (thesis: ten CatKit starts); the adsorbate is
              nudged off the symmetric site so no relaxation stops at a saddle
hopping       one `minimahopping` task per start, all submitted at once (the engine runs them
              concurrently, each checkpointed)
σ_thr         a search whose MD or relaxation breaches σ_thr stops there; the configurations are labelled
              with the run's reference, the model refitted on the run's labels plus these (Campaign), and
              the interrupted starts continue from their last minimum, round after round (thesis: ten AL
              iterations); minima of superseded models are relaxed again with the final one
unique        the minima of all starts of an intermediate, lowest first, de-duplicated by the SOAP
              environments of the adsorbate's atoms (workflows/minima.py, appendix A's settings)
E_ads         E(minimum) − E(site slab) − Σ n μ (workflows/adsorption.py): the site slab relaxed with
              the same model; μ the reference's, read from the run's summary where it has them, else
              from block 0's gas-reference tasks run here (runs older than the adsorption key)
validation    the n lowest unique minima of each intermediate and the site slab relaxed on the run's
              reference (thesis: 25, to 0.01 eV/Å): E_ads error and RMSD per minimum
output        exploration/minima.xyz, summary.json `exploration`, report/exploration.png (Fig. 3.7a
              histogram of E_ads, Fig. 3.7b the minima's adsorbates over the slab, coloured by E_ads)
"""
from __future__ import annotations

import json
from concurrent.futures import wait
from dataclasses import replace

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.geometry import find_mic
from reactforge.engine.futures import settled
from reactforge.schemas.tasks import MinimaHoppingSpec, ModelRef, OptimiseSpec

from . import adsorption
from . import minima as dedup
from .active_learning import SEED_STRIDE, BlockReport, Campaign
from .hopping import HOPPING_CRITERION, Start, hop_rounds, relax_again

BLOCK = "exploration"  # the labels' block name


def read_sources(protocol):
    """The catalysis protocol (system, reference, σ_thr), the model, and the run directory (or None)."""
    from reactforge.engine.store import Store
    from reactforge.schemas.loading import load_protocol
    from reactforge.schemas.protocol import Protocol

    from .free_energy import _run_model

    run_dir = protocol.resolve(protocol.run) if protocol.run is not None else None
    path = protocol.resolve(protocol.catalysis) if protocol.catalysis else run_dir / "protocol.yaml"
    if not path.is_file():
        raise ValueError(f"no catalysis protocol {path}" + (" (is 'run' a run directory?)" if run_dir else ""))
    catalysis = load_protocol(path, Protocol)
    if protocol.model is not None:
        m = protocol.model
        model = Store.model_ref(m.model, [protocol.resolve(p) for p in m.paths], m.uncertainty)
    else:
        model = _run_model(run_dir)
    return catalysis, model, run_dir


def run_chemical_potentials(run_dir, cat) -> tuple[dict[str, float] | None, str]:
    """The reference μ of a finished run and where they came from: its summary's where it has them; else
    block 0's gas-reference tasks (relaxation and single point on the reference) through `cat`, a Catalysis
    of the run's protocol on this run's engine: the same specs the run would have submitted."""
    summary = run_dir / "summary.json" if run_dir else None
    if summary is not None and summary.is_file():
        mu = (json.loads(summary.read_text()).get("adsorption") or {}).get("chemical_potentials_eV")
        if mu:
            return mu, "run"
    if not cat.gas_names:
        return None, "off (gas_references: [])"
    b0 = cat.protocol.parameters.b0_initial
    cat._gas_energies(b0, cat._relax_gas(b0), None)
    return cat.mu, "gas references relaxed here"


def plan(protocol) -> list[str]:
    from .catalysis_build import build_system

    catalysis, model, run_dir = read_sources(protocol)
    system = build_system(catalysis)
    names = _intermediates(protocol, system)
    h, d, v = protocol.hopping, protocol.deduplication, protocol.validation
    lines = [f"model {model.model} ({len(model.paths)} file(s))" + (f" from run {run_dir}" if run_dir else ""),
             (f"intermediates {', '.join(names)}: {protocol.starts.per_intermediate} starts each (FPS of "
              f"{protocol.starts.candidates} placements around the active site)"),
             (f"minimahopping per start: T0 {h.T0_K:g} K, ≤ {h.max_hops} hops, ≤ {h.n_minima} minima, "
              f"fmax {h.fmax_eV_per_A} eV/Å; {len(names) * protocol.starts.per_intermediate} tasks"),
             (f"unique minima: adsorbate SOAP (cutoff {d.cutoff_A} Å, l_max {d.l_max}, n_max {d.n_max}), "
              f"distance < {d.threshold} is a duplicate"),
             f"adsorption energies: μ of {', '.join(system.adsorbate_elements())} (the run's, else its gas references)"]
    al = protocol.active_learning
    thr = protocol.sigma_thr_eV or catalysis.sigma_thr_eV
    lines.append(f"active learning: a search above σ_thr {thr * 1000:g} meV stops, is labelled with "
                 f"{catalysis.reference.code}, the model refitted and the start continued; ≤ {al.max_iterations} "
                 "rounds" if al.enabled and run_dir is not None else
                 f"active learning: off (σ_thr {thr * 1000:g} meV is monitored)")
    lines.append(f"validation: the {v.n_lowest} lowest unique minima per intermediate relaxed with "
                 f"{catalysis.reference.code} to {v.fmax_eV_per_A} eV/Å" if v.enabled else "validation: off")
    return lines


def _intermediates(protocol, system) -> list[str]:
    names = protocol.intermediates or list(system.intermediates)
    unknown = [n for n in names if n not in system.intermediates]
    if unknown:
        raise ValueError(f"intermediates: {unknown} are not the run's ({', '.join(system.intermediates)})")
    return names


def run(protocol, engine, store, progress) -> dict:
    return Exploration(protocol, engine, store, progress).run()


class Exploration:
    def __init__(self, protocol, engine, store, progress):
        from .catalysis import Catalysis

        self.p, self.engine, self.store, self.progress = protocol, engine, store, progress
        catalysis, self.model, self.run_dir = read_sources(protocol)
        # the run's own objects: its system as built from its protocol, and block 0's gas references
        self.cat = Catalysis(catalysis, engine, store, progress)
        self.system, self.fixed = self.cat.system, self.cat.fixed
        self.names = _intermediates(protocol, self.system)
        self.n_slab = len(self.system.site_slab)
        self.sigma_thr = protocol.sigma_thr_eV or catalysis.sigma_thr_eV
        self.learn = protocol.active_learning.enabled and self.run_dir is not None
        self.campaign = None
        if self.learn:
            self.campaign = Campaign(engine, store, progress, catalysis.reference, catalysis.model, seed=protocol.seed)
            self.campaign.model = self.model
            self.campaign.import_labels(self.run_dir)
        self.report = BlockReport(BLOCK, criterion=HOPPING_CRITERION)
        d = protocol.deduplication
        self.soap = dedup.descriptor(self.system.elements, d.cutoff_A, d.l_max, d.n_max, d.atom_sigma_A, d.transition_A)

    # ------------------------------------------------------------------ starts and hopping
    def starts(self, name: str) -> list[Atoms]:
        from .catalysis import placements

        s = self.p.starts
        b3 = self.cat.protocol.parameters.b3_adsorbate_seed
        params = b3.model_copy(update={"placements_per_snapshot": s.candidates, "fps_per_intermediate": s.per_intermediate,
                                       "placement_radius_A": s.radius_A or b3.placement_radius_A})
        one = replace(self.system, intermediates={name: self.system.intermediates[name]})
        rng = np.random.default_rng(SEED_STRIDE * self.p.seed + self.names.index(name))
        placed = placements(one, [self.system.site_slab], params, rng)
        for a in placed:
            a.positions[self.n_slab:] += rng.normal(0.0, s.rattle_A, (len(a) - self.n_slab, 3))
        return placed

    def _hop_spec(self, model: ModelRef, seed: int, hops: int, n_minima: int, sigma_thr_eV: float | None,
                  T0_K: float | None) -> MinimaHoppingSpec:
        h = self.p.hopping
        return MinimaHoppingSpec(model=model, T0_K=T0_K or h.T0_K, Ediff0_eV=h.Ediff0_eV, mdmin=h.mdmin,
                                 fmax_eV_per_A=h.fmax_eV_per_A, timestep_fs=h.timestep_fs, n_minima=n_minima,
                                 max_hops=hops, max_optimisation_steps=h.max_optimisation_steps,
                                 fixed_atoms=self.fixed, sigma_thr_eV=sigma_thr_eV, seed=seed)

    def hop(self) -> dict[str, list[Start]]:
        """Every start's minimahopping task at once, round after round (workflows/hopping.py): a search that
        breaches σ_thr stops there, the configurations are labelled, the model refitted and those starts
        continue from their last minimum with the hops and minima they have left; minima of superseded
        models are relaxed again with the final one."""
        h, al = self.p.hopping, self.p.active_learning
        starts = {(n, k): Start(a) for n in self.names for k, a in enumerate(self.starts(n))}
        self.model = hop_rounds(
            self.engine, self.progress, starts, model=self.model, spec=self._hop_spec,
            seed=lambda key, iteration: (SEED_STRIDE * self.p.seed + 100_000 * iteration
                                         + 1000 * self.names.index(key[0]) + key[1]),
            max_hops=h.max_hops, n_minima=h.n_minima, sigma_thr_eV=self.sigma_thr,
            campaign=self.campaign if self.learn else None, max_iterations=al.max_iterations if self.learn else 0,
            report=self.report, block=BLOCK)
        relax_again(self.engine, self.progress, starts, self.model, fixed_atoms=self.fixed,
                    fmax_eV_per_A=h.fmax_eV_per_A, max_steps=h.max_optimisation_steps, report=self.report,
                    block=BLOCK)
        out: dict[str, list[Start]] = {n: [] for n in self.names}
        for (n, _), start in starts.items():
            out[n].append(start)
        return out

    # ------------------------------------------------------------------ energies
    def chemical_potentials(self) -> tuple[dict[str, float] | None, str]:
        return run_chemical_potentials(self.run_dir, self.cat)

    def _relax(self, atoms: Atoms, **potential):
        spec = OptimiseSpec(fixed_atoms=self.fixed, **potential)
        return self.engine.submit(spec, [atoms])

    # ------------------------------------------------------------------ the workflow
    def run(self) -> dict:
        mu, mu_source = self.chemical_potentials()
        h, v = self.p.hopping, self.p.validation
        results = self.hop()
        e_site = settled(self._relax(self.system.site_slab, model=self.model, fmax_eV_per_A=h.fmax_eV_per_A,
                                     max_steps=h.max_optimisation_steps))
        e_site = e_site.energy_eV if e_site is not None else None
        frames, out = [], {}
        for name in self.names:
            comp = {el: self.system.intermediates[name].get_chemical_symbols()[self.n_slab:].count(el)
                    for el in set(self.system.intermediates[name].get_chemical_symbols()[self.n_slab:])}
            found = [(k, m, e, s) for k, start in enumerate(results[name]) for m, e, s, _ in start.found]
            entry = {"starts": len(results[name]), "starts_failed": sum(s.failed for s in results[name]),
                     "hops": sum(s.hops for s in results[name]), "minima_found": len(found),
                     "sigma_breaches": sum(s.breaches for s in results[name])}
            kept, same_as = (dedup.unique([m for _, m, _, _ in found], [e for _, _, e, _ in found],
                                          range(self.n_slab, len(found[0][1])), self.soap,
                                          self.p.deduplication.threshold) if found else ([], []))
            rows = []
            for i in kept:
                start, m, e, s = found[i]
                e_ads = (adsorption.adsorption_energy(e, e_site, comp, mu)
                         if mu is not None and e_site is not None else None)
                rows.append({"minimum": m, "energy_eV": e, "sigma_eV": s, "adsorption_energy_eV": e_ads,
                             "start": start, "visits": same_as.count(i)})
            entry.update(unique_minima=len(rows),
                         lowest_adsorption_energy_eV=min((r["adsorption_energy_eV"] for r in rows
                                                          if r["adsorption_energy_eV"] is not None), default=None),
                         minima_above_sigma_thr=sum(r["sigma_eV"] > self.sigma_thr for r in rows))
            out[name] = (entry, rows, comp)
        validation = self.validate(out, mu) if v.enabled else {}
        summary = {}
        for name, (entry, rows, _) in out.items():
            entry.update(validation.get(name, {"validated": 0, "max_abs_error_eV": None, "max_rmsd_A": None}))
            summary[name] = entry
            for r in rows:
                a = r["minimum"].copy()
                a.info.update({k: val for k, val in r.items() if k != "minimum" and val is not None},
                              intermediate=name)
                a.calc = SinglePointCalculator(a, energy=r["energy_eV"])
                frames.append(a)
            self.progress.log(f"{name}: {entry['minima_found']} minima from {entry['starts']} starts, "
                              f"{entry['unique_minima']} unique")
        self.store.write_xyz("exploration/minima.xyz", frames)
        self._figure(out)
        learning = {**self.report.as_dict(), "enabled": self.learn,
                    "labels_in_training_set": self.store.count() if self.learn else None}
        return {"exploration": {"intermediates": summary, "chemical_potentials_eV": mu, "mu_source": mu_source,
                                "site_slab_mlff_eV": e_site, "sigma_thr_eV": self.sigma_thr,
                                "minima": "exploration/minima.xyz", "figure": "report/exploration.png"},
                "exploration_active_learning": learning, "model": self.model.model_dump(mode="json")}

    # ------------------------------------------------------------------ validation on the reference
    def validate(self, out: dict, mu) -> dict:
        """The lowest unique minima relaxed on the reference with the site slab: E_ads(MLFF) − E_ads(ref)
        and the RMSD (minimum image) between the MLFF and the reference minimum."""
        v, ref = self.p.validation, self.cat.protocol.reference
        spec = {"reference": ref, "fmax_eV_per_A": v.fmax_eV_per_A, "max_steps": v.max_steps}
        self.progress.set_stage("exploration: validation of the lowest minima on the reference")
        site = self._relax(self.system.site_slab, **spec)
        futures = {(n, k): self._relax(r["minimum"], **spec) for n, (_, rows, _) in out.items()
                   for k, r in enumerate(sorted(rows, key=lambda r: r["energy_eV"])[:v.n_lowest])}
        wait([site, *futures.values()])
        site_ref = settled(site)
        result = {n: {"validated": 0, "max_abs_error_eV": None, "max_rmsd_A": None} for n in out}
        for (n, k), f in futures.items():
            _, rows, comp = out[n]
            row = sorted(rows, key=lambda r: r["energy_eV"])[k]
            relaxed = settled(f)
            if relaxed is None:
                self.progress.log(f"{n}: reference relaxation of minimum {k} failed: {f.exception()}")
                continue
            d, _ = find_mic(relaxed.final.positions - row["minimum"].positions, row["minimum"].cell,
                            row["minimum"].pbc)
            row["rmsd_A"] = float(np.sqrt((d ** 2).sum(axis=1).mean()))
            row["reference_energy_eV"] = relaxed.energy_eV
            if mu is not None and site_ref is not None and row["adsorption_energy_eV"] is not None:
                row["reference_adsorption_energy_eV"] = adsorption.adsorption_energy(
                    relaxed.energy_eV, site_ref.energy_eV, comp, mu)
                row["error_eV"] = row["adsorption_energy_eV"] - row["reference_adsorption_energy_eV"]
            res = result[n]
            res["validated"] += 1
            res["max_rmsd_A"] = max(res["max_rmsd_A"] or 0.0, row["rmsd_A"])
            if "error_eV" in row:
                res["max_abs_error_eV"] = max(res["max_abs_error_eV"] or 0.0, abs(row["error_eV"]))
        for n, res in result.items():
            res["site_slab_reference_eV"] = site_ref.energy_eV if site_ref is not None else None
        return result

    # ------------------------------------------------------------------ Fig. 3.7
    def _figure(self, out: dict) -> None:
        """(a) histogram of the unique minima's E_ads per intermediate; (b) every minimum's adsorbate atoms
        over the site slab (grey), coloured by E_ads."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from ase.data.colors import jmol_colors
        from matplotlib.ticker import MaxNLocator

        values = {n: [r["adsorption_energy_eV"] for r in rows if r["adsorption_energy_eV"] is not None]
                  for n, (_, rows, _) in out.items()}
        fig, (ax, top) = plt.subplots(1, 2, figsize=(10, 4))
        if any(values.values()):
            ax.hist([values[n] for n in values], bins=20, label=list(values), stacked=True)
            ax.legend(fontsize=8)
        ax.set_xlabel("adsorption energy (eV)")
        ax.set_ylabel("unique minima")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("(a) adsorption energies")
        slab = self.system.site_slab
        top.scatter(*slab.positions[:, :2].T, s=60, c=[jmol_colors[z] for z in slab.numbers], edgecolors="k",
                    linewidths=0.3)
        cell = slab.cell.array
        corners = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]) @ cell[:2, :2]
        top.plot(*corners.T, "k-", lw=0.6)
        xy, colour = [], []
        for _, rows, _ in out.values():
            for r in rows:
                if r["adsorption_energy_eV"] is None:
                    continue
                xy += list(_in_cell(r["minimum"], self.n_slab)[:, :2])
                colour += [r["adsorption_energy_eV"]] * (len(r["minimum"]) - self.n_slab)
        if xy:
            points = top.scatter(*np.array(xy).T, c=colour, s=25, cmap="viridis", edgecolors="k", linewidths=0.3)
            fig.colorbar(points, ax=top, label="adsorption energy (eV)")
        top.set_aspect("equal")
        top.set_xlabel("x (Å)")
        top.set_ylabel("y (Å)")
        top.set_title("(b) unique minima over the site slab")
        fig.tight_layout()
        with self.store.atomic_path("report/exploration.png") as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)



def _in_cell(minimum: Atoms, n_slab: int) -> np.ndarray:
    """The adsorbate's positions moved by one lattice vector so that its centre lies over the cell: a hop
    may carry it out of the cell, and the top view draws the cell."""
    ads = minimum.positions[n_slab:]
    centre = ads.mean(axis=0)
    frac = np.linalg.solve(minimum.cell.array.T, centre)
    shift = -np.floor(frac) * np.array([1, 1, 0])  # in-plane only
    return ads + shift @ minimum.cell.array
