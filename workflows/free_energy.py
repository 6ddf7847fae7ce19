"""Free-energy barriers with the trained MLFF (thesis §3.4.2-3.4.3, Fig. 3.6), read beside the thesis.

windows      ξ from the band's initial to its final image in `n_windows` evenly spaced centres; each
             window starts from the band interpolated at its centre; one `umbrellawindow` task per
             window, reaction and temperature, all submitted at once (the engine runs them concurrently,
             a long window checkpoints and resumes on its own)
σ_thr        every sampled frame's per-atom σ is checked; a window that breaches stops with its
             breaching frames, which are labelled with the reference (workflows/active_learning.py's
             Campaign, on the catalysis run's labels), the model is retrained and the windows rerun,
             until no window breaches (the thesis sampled a fixed model)
analysis     umbrella integration (Kästner & Thiel 2005) with block-averaged errors; MBAR (pymbar) on
             the same samples beside it (workflows/free_energy_analysis.py)
output       summary.json `free_energy` (per reaction and temperature), free_energy/<reaction>_<T>K.dat
             (ξ, A, σ_A), report/free_energy.png (band energy and A(ξ) at each temperature along ξ)
"""
from __future__ import annotations

import io
import itertools
import json
from collections import Counter
from concurrent.futures import wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read

from reactforge.engine.futures import settled
from reactforge.schemas.tasks import ModelRef, UmbrellaWindowSpec

from .active_learning import SEED_STRIDE, BlockReport, Campaign
from .free_energy_analysis import Window, mbar_profile, umbrella_integration

BLOCK = "free_energy"  # the labels' block name


# ---------------------------------------------------------------------------------------------- input


@dataclass
class Source:
    """What the windows start from: the model, each reaction's band, and (from a catalysis run) what
    retraining needs: the run's protocol (reference, model settings, σ_thr) and directory (labels)."""

    model: ModelRef
    bands: dict[str, list[Atoms]]
    run_dir: Path | None = None
    catalysis: object | None = None  # schemas.protocol.Protocol of the run


def _run_model(run_dir: Path) -> ModelRef:
    summary = run_dir / "summary.json"
    data = json.loads(summary.read_text()) if summary.is_file() else {}
    if not data.get("model"):
        raise ValueError(f"run: {run_dir} has no finished model (summary.json without 'model')")
    model = ModelRef.model_validate(data["model"])
    # the run wrote models/<name>/<file> as its directory was spelled then; a moved run still has them
    paths = [Path(p) if Path(p).exists() else run_dir / "models" / Path(p).parent.name / Path(p).name
             for p in model.paths]
    if not all(p.exists() for p in paths):
        raise ValueError(f"run: the final model's files are not in {run_dir / 'models'}")
    return model.model_copy(update={"paths": [str(p) for p in paths]})


def read_source(protocol) -> Source:
    from reactforge.engine.store import Store
    from reactforge.schemas.loading import load_protocol
    from reactforge.schemas.protocol import Protocol

    run_dir, catalysis = None, None
    if protocol.run is not None:
        run_dir = protocol.resolve(protocol.run)
        if not (run_dir / "protocol.yaml").is_file():
            raise ValueError(f"run: {run_dir} is not a run directory (no protocol.yaml)")
        catalysis = load_protocol(run_dir / "protocol.yaml", Protocol)
    if protocol.model is not None:
        m = protocol.model
        model = Store.model_ref(m.model, [protocol.resolve(p) for p in m.paths], m.uncertainty)
    else:
        model = _run_model(run_dir)
    bands = {}
    for r in protocol.reactions:
        path = protocol.resolve(r.band) if r.band is not None else run_dir / "paths" / f"{r.name}.xyz"
        if not path.is_file():
            raise ValueError(f"reaction {r.name}: no band file {path}")
        bands[r.name] = read(path, ":")
        n = len(bands[r.name][0])
        if len(bands[r.name]) < 2 or max(r.cv.atoms) >= n:
            raise ValueError(f"reaction {r.name}: the band needs ≥ 2 images with atoms {r.cv.atoms} (it has {n} atoms)")
    return Source(model, bands, run_dir, catalysis)


def cv_value(atoms: Atoms, cv) -> float:
    """ξ of one structure, as the umbrella task's restraint measures it (minimum image)."""
    a, b = cv.atoms[:2]
    d = atoms.get_distance(a, b, mic=True)
    return float(d - atoms.get_distance(b, cv.atoms[2], mic=True)) if cv.kind == "distance_difference" else float(d)


def follow_band(cv, band: list[Atoms]):
    """The CV with its like atoms permuted so that ξ changes most from the band's first to its last image
    (ties keep the protocol's order). Which of two H atoms a band moves is block 6's choice (the like-atom
    permutation it found lowest), so the protocol's indices name roles, not particular atoms."""
    symbols = band[0].get_chemical_symbols()
    best, span = cv, -1.0
    for perm in itertools.permutations(cv.atoms):
        if any(symbols[p] != symbols[a] for p, a in zip(perm, cv.atoms)):
            continue
        trial = cv.model_copy(update={"atoms": list(perm)})
        change = abs(cv_value(band[-1], trial) - cv_value(band[0], trial))
        if change > span + 1e-6:
            best, span = trial, change
    return best


def matched(protocol, source):
    """The protocol with every reaction's CV following its band (follow_band)."""
    reactions = [r.model_copy(update={"cv": follow_band(r.cv, source.bands[r.name])}) for r in protocol.reactions]
    return protocol.model_copy(update={"reactions": reactions})


def window_starts(band: list[Atoms], cv, n_windows: int, margin_A: float) -> tuple[np.ndarray, list[Atoms], int]:
    """Window centres from the band's initial to its final ξ (± margin), the band interpolated at each
    centre (linearly between the two images whose ξ bracket it; an end image beyond the band) and the
    direction ξ goes along the band (+1 or −1)."""
    xi = np.array([cv_value(a, cv) for a in band])
    direction = 1 if xi[-1] > xi[0] else -1
    if abs(xi[-1] - xi[0]) < 1e-3:
        raise ValueError(f"the CV {cv.kind} {cv.atoms} does not change along the band ({xi[0]:.3f} Å at both ends)")
    centres = np.linspace(xi[0] - direction * margin_A, xi[-1] + direction * margin_A, n_windows)
    starts = []
    for c in centres:
        start = band[0] if direction * (c - xi[0]) <= 0 else band[-1]
        for k in range(len(band) - 1):
            lo, hi = xi[k], xi[k + 1]
            if min(lo, hi) <= c <= max(lo, hi) and hi != lo:
                t = (c - lo) / (hi - lo)
                start = band[k].copy()
                start.positions = (1 - t) * band[k].positions + t * band[k + 1].positions
                break
        a = start.copy()
        a.info = {}
        starts.append(a)
    return centres, starts, direction


def plan(protocol) -> list[str]:
    source = read_source(protocol)
    given = {r.name: r.cv.atoms for r in protocol.reactions}
    protocol = matched(protocol, source)
    w, al = protocol.windows, protocol.active_learning
    lines = [f"model {source.model.model} ({len(source.model.paths)} file(s))"
             + (f" from run {source.run_dir}" if source.run_dir else "")]
    for r in protocol.reactions:
        centres, _, _ = window_starts(source.bands[r.name], r.cv, w.n_windows, w.margin_A)
        permuted = f" (like atoms of {given[r.name]} permuted to follow the band)" if r.cv.atoms != given[r.name] else ""
        lines.append(f"reaction {r.name}: ξ = {r.cv.kind} {r.cv.atoms}{permuted}, {centres[0]:.2f} → {centres[-1]:.2f} Å "
                     f"over {len(source.bands[r.name])} band images; {w.n_windows} windows at "
                     f"{', '.join(f'{t:g}' for t in protocol.temperatures_K)} K")
    lines.append(f"umbrellawindow: k = {w.spring_eV_per_A2} eV/Å², {w.equilibration_steps} + {w.production_steps} steps "
                 f"of {w.timestep_fs} fs, {len(protocol.reactions) * len(protocol.temperatures_K) * w.n_windows} windows")
    if al.enabled and source.catalysis is not None:
        thr = al.sigma_thr_eV or source.catalysis.sigma_thr_eV
        lines.append(f"active learning: σ_thr {thr * 1000:g} meV, ≤ {al.frames_per_window} frames per breaching "
                     f"window labelled with {source.catalysis.reference.code}, retrain, rerun {al.rerun} windows; "
                     f"≤ {al.max_iterations} iterations")
    else:
        lines.append("active learning: off (σ is monitored and reported)")
    lines.append(f"analysis: umbrella integration ({protocol.analysis.n_blocks} blocks)"
                 + (" and MBAR (pymbar)" if protocol.analysis.mbar else ""))
    return lines


def run(protocol, engine, store, progress) -> dict:
    return FreeEnergy(protocol, engine, store, progress).run()


# ---------------------------------------------------------------------------------------------- the workflow


class FreeEnergy:
    def __init__(self, protocol, engine, store, progress):
        self.engine, self.store, self.progress = engine, store, progress
        self.source = read_source(protocol)
        self.p = protocol = matched(protocol, self.source)
        self.model = self.source.model
        al, cat = protocol.active_learning, self.source.catalysis
        self.learn = al.enabled and cat is not None
        self.sigma_thr = al.sigma_thr_eV or (cat.sigma_thr_eV if cat is not None else None)
        self.campaign = None
        if self.learn:
            self.campaign = Campaign(engine, store, progress, cat.reference, cat.model, seed=protocol.seed)
            self.campaign.model = self.model
            self.campaign.import_labels(self.source.run_dir)
        self.fixed = protocol.fixed_atoms
        self.windows = {}  # (reaction, T, index) -> (centre, start structure)
        self.direction = {}
        for r in protocol.reactions:
            centres, starts, self.direction[r.name] = window_starts(
                self.source.bands[r.name], r.cv, protocol.windows.n_windows, protocol.windows.margin_A)
            for T in protocol.temperatures_K:
                for k, (c, s) in enumerate(zip(centres, starts)):
                    self.windows[(r.name, T, k)] = (float(c), s)

    def _spec(self, key, stop: bool) -> UmbrellaWindowSpec:
        """The window's task; with `stop` it returns (and stops at) frames above σ_thr, to be labelled."""
        rname, T, k = key
        w, al = self.p.windows, self.p.active_learning
        cv = next(r.cv for r in self.p.reactions if r.name == rname)
        centre, _ = self.windows[key]
        t_index = self.p.temperatures_K.index(T)
        return UmbrellaWindowSpec(
            model=self.model, cv=cv.kind, atom_i=cv.atoms[0], atom_j=cv.atoms[1],
            atom_k=cv.atoms[2] if cv.kind == "distance_difference" else None, centre_A=centre,
            spring_eV_per_A2=w.spring_eV_per_A2, temperature_K=T, timestep_fs=w.timestep_fs,
            equilibration_steps=w.equilibration_steps, production_steps=w.production_steps,
            sample_every=w.sample_every, friction_per_fs=w.friction_per_fs, fixed_atoms=self.fixed or [],
            seed=SEED_STRIDE * self.p.seed + 1000 * t_index + k, sigma_thr_eV=self.sigma_thr if stop else None,
            max_breaching_frames=al.frames_per_window, breach_spacing_steps=al.frame_spacing_steps)

    # ------------------------------------------------------------------ sampling with active learning
    def sample(self) -> tuple[dict, BlockReport, Counter]:
        """Windows until none breaches σ_thr. The last allowed round (or every round without active
        learning) runs its windows to the end whatever their σ: A(ξ) then comes from full windows, and
        how many went above σ_thr is reported."""
        al = self.p.active_learning
        report = BlockReport(BLOCK, criterion=f"no umbrella window above σ_thr = {self.sigma_thr} eV")
        results, retrained_for = {}, Counter()  # (reaction, T) -> AL iterations its windows caused
        pending = list(self.windows)
        for iteration in range(0, al.max_iterations + 1):
            last = not self.learn or iteration == al.max_iterations
            self.progress.set_stage(f"free energy: iteration {iteration}, {len(pending)} umbrella windows")
            futures = {key: self.engine.submit(self._spec(key, stop=not last), [self.windows[key][1]])
                       for key in pending}
            wait(futures.values())
            for key, f in futures.items():
                results.pop(key, None)
                if (res := settled(f)) is None:
                    self.progress.log(f"umbrella window {key} failed: {f.exception()}")
                else:
                    results[key] = res
            thr = self.sigma_thr if self.sigma_thr is not None else np.inf
            above = [k for k in pending if k in results and (results[k].max_sigma_eV or 0.0) > thr]
            worst = max((r.max_sigma_eV or 0.0 for r in results.values()), default=float("nan"))
            report.iterations, report.criterion_value = iteration, worst
            report.history.append({"iteration": iteration, "windows_run": len(pending), "breached": len(above),
                                   "max_sigma_eV": worst, "model": self.model.sha256})
            self.progress.log(f"free energy iteration {iteration}: {len(above)} of {len(pending)} windows "
                              f"above σ_thr; max σ {worst * 1000:.1f} meV")
            if not above:
                report.termination_met = len(results) == len(self.windows)
                break
            if last:
                break
            frames = [frame for k in above for frame in results[k].breaching]
            labels = self.campaign.label(frames, block=BLOCK, iteration=iteration + 1, reason="umbrella σ breach")
            self.campaign.wait_labels()
            report.count(labels)
            retrained_for.update({(k[0], k[1]) for k in above})
            self.model = self.campaign.retrain(f"{BLOCK}-{iteration + 1}")
            pending = list(self.windows) if al.rerun == "all" else above
        return results, report, retrained_for

    # ------------------------------------------------------------------ analysis and output
    def run(self) -> dict:
        results, report, retrained_for = self.sample()
        a = self.p.analysis
        out: dict[str, dict] = {}
        profiles = {}
        for r in self.p.reactions:
            out[r.name] = {}
            band = self.source.bands[r.name]
            energies = [im.info.get("energy_mlff_eV") for im in band]
            band_barrier = (float(max(energies) - energies[0]) if all(e is not None for e in energies) else None)
            for T in self.p.temperatures_K:
                done = [(self.windows[k][0], results[k]) for k in sorted(self.windows) if k[:2] == (r.name, T)
                        and k in results and len(results[k].cv_A) >= 2 * a.n_blocks]
                entry = {"cv_atoms": list(r.cv.atoms), "windows": len(done), "samples": int(sum(len(res.cv_A) for _, res in done)),
                         "al_iterations": retrained_for[(r.name, T)], "band_barrier_eV": band_barrier,
                         "max_sigma_eV": max((res.max_sigma_eV or 0.0 for _, res in done), default=None),
                         "windows_above_sigma_thr": sum((res.max_sigma_eV or 0.0) > (self.sigma_thr or np.inf)
                                                        for _, res in done)}
                if len(done) < 2:
                    out[r.name][f"{T:g}K"] = {**entry, "barrier_eV": None, "error_eV": None, "mbar_barrier_eV": None,
                                             "error": "fewer than two windows with samples"}
                    continue
                windows = [Window(c, res.spring_eV_per_A2, np.asarray(res.cv_A)) for c, res in done]
                direction = self.direction[r.name]
                # reactant and product basins divide at the band's highest image
                divide = cv_value(band[int(np.argmax(energies))], r.cv) if band_barrier is not None else None
                ui = umbrella_integration(windows, T, n_blocks=a.n_blocks, n_grid=a.grid_points, direction=direction,
                                          divide=divide)
                mbar = mbar_profile(windows, T, bin_width=a.mbar_bin_width_A, direction=direction,
                                    guess=ui, divide=divide) if a.mbar else None
                profiles[(r.name, T)] = ui
                name = f"free_energy/{r.name}_{T:g}K.dat"
                self.store.write_text(name, _dat(ui, r, T))
                entry.update({"barrier_eV": ui.barrier_eV, "error_eV": ui.error_eV,
                              "mbar_barrier_eV": mbar.barrier_eV if mbar else None,
                              "mbar_error_eV": mbar.error_eV if mbar else None,
                              "xi_minimum_A": ui.xi_minimum, "xi_barrier_A": ui.xi_barrier, "profile": name})
                out[r.name][f"{T:g}K"] = entry
                self.progress.log(f"{r.name} at {T:g} K: ΔA‡ {ui.barrier_eV:.3f} ± {ui.error_eV:.3f} eV (UI)"
                                  + (f", {mbar.barrier_eV:.3f} ± {mbar.error_eV:.3f} eV (MBAR)" if mbar else ""))
        self._figure(profiles)
        learning = {**report.as_dict(), "labels_in_training_set": self.store.count() if self.learn else None}
        return {"free_energy": out, "free_energy_active_learning": learning,
                "model": self.model.model_dump(mode="json")}

    def _figure(self, profiles: dict) -> None:
        """Fig. 3.6: the band's MLFF energy (black) and A(ξ) at each temperature along ξ, one panel per reaction."""
        if not profiles:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        reactions = [r for r in self.p.reactions if any(k[0] == r.name for k in profiles)]
        fig, axes = plt.subplots(1, len(reactions), figsize=(4.5 * len(reactions), 3.6), squeeze=False)
        colours = plt.cm.viridis(np.linspace(0.15, 0.85, len(self.p.temperatures_K)))
        for ax, r in zip(axes[0], reactions):
            band = self.source.bands[r.name]
            energies = [im.info.get("energy_mlff_eV") for im in band]
            if all(e is not None for e in energies):
                xi = [cv_value(im, r.cv) for im in band]
                ax.plot(xi, np.asarray(energies) - energies[0], "k-o", ms=3, label="NEB (MLFF)")
            for colour, T in zip(colours, self.p.temperatures_K):
                if (p := profiles.get((r.name, T))) is None:
                    continue
                ax.plot(p.xi, p.A_eV, color=colour, label=f"A(ξ), {T:g} K")
                ax.fill_between(p.xi, p.A_eV - p.sigma_eV, p.A_eV + p.sigma_eV, color=colour, alpha=0.3, lw=0)
            ax.set_xlabel(f"ξ = {'d' if r.cv.kind == 'distance' else 'Δd'}{tuple(r.cv.atoms)} (Å)")
            ax.set_ylabel("energy (eV)")
            ax.set_title(r.name)
            ax.legend(fontsize=8)
        fig.tight_layout()
        with self.store.atomic_path("report/free_energy.png") as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)


def _dat(profile, reaction, T: float) -> str:
    buf = io.StringIO()
    buf.write(f"# {reaction.name} at {T:g} K, umbrella integration; ξ = {reaction.cv.kind} {reaction.cv.atoms}\n"
              f"# ΔA‡ = {profile.barrier_eV:.5f} ± {profile.error_eV:.5f} eV; A = 0 at ξ = {profile.xi_minimum:.4f} Å\n"
              "# xi_A A_eV sigma_A_eV\n")
    for x, A, s in zip(profile.xi, profile.A_eV, profile.sigma_eV):
        buf.write(f"{x:.5f} {A:.6f} {s:.6f}\n")
    return buf.getvalue()
