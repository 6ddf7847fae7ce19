"""Dynamic NMR spectra across time-scales (thesis §5.3, Fig. 5.1), read side by side with the thesis.

§5.3.1 exploration    minima hopping with the MLFF; with `train:` the model learns on the way (a search above
                      σ_thr stops, is labelled, the model refitted and the search continued: workflows/
                      hopping.py, as the exploration workflow); minima de-duplicated by per-atom SOAP distance
                      NVT MD at each minimum; configurations sampled along it
          shielding    `nmrshielding` tasks for every minimum and every sample, concurrently
§5.3.2 fast regime     σ_eff^(i), V_eff^(i): element-wise mean over the samples of minimum i (Eq. 5.10)
       rates           CI-NEB between minima pairs; harmonic TST with the Vineyard prefactor (ASE Vibrations);
                       with `train:` the reference's energies along each band check its barrier
       intermediate    jump model between the minima's tensors with the rate matrix K
       fast + interm.  jump model between the MD-averaged tensors
Fig. 5.1               panels A static, B intermediate, C fast, D fast + intermediate, over the experiment.
With `precomputed` magres files the exploration, MD and shielding stages are read from the files.
"""
from __future__ import annotations

from concurrent.futures import Future, as_completed
from itertools import combinations

import numpy as np
from ase import Atoms
from ase.io import read

from reactforge.schemas.tasks import (
    EvaluateSpec,
    MDSpec,
    MinimaHoppingSpec,
    NEBSpec,
    NMRShieldingSpec,
    SinglePointSpec,
    VibrationsSpec,
)
from reactforge.tasks.nmr import averaging, exchange, rates, spectra, tensors
from reactforge.engine.engine import TaskFailed

from . import minima as dedup
from .active_learning import BlockReport


def plan(protocol) -> list[str]:
    p, s = protocol, protocol.spectrum
    check_inputs(p)
    lines = []
    if p.precomputed:
        check_precomputed(p)
        n_samples = sum(len(m.samples) for m in p.precomputed)
        lines.append(f"minima from {len(p.precomputed)} precomputed magres file(s), {n_samples} MD sample(s)")
    if p.train is not None:
        t = p.train
        charge = f" (charge {t.reference.charge:+d})" if getattr(t.reference, "charge", 0) else ""
        lines.append(f"MLFF ({t.model.model}) trained on {p.structure} with {t.reference.code}{charge}: "
                     f"{t.n_rattled} rattled copies + E0s, then MD ({t.md_steps} × {t.timestep_fs} fs) at "
                     f"{', '.join(f'{T:g}' for T in t.temperatures_K)} K until no run exceeds σ_thr "
                     f"{t.sigma_thr_eV * 1000:g} meV (≤ {t.max_iterations} rounds each)")
    if not p.precomputed:
        e, md = p.exploration, p.sampling
        kind = p.model.model if p.model is not None else p.train.model.model
        thr = hopping_sigma_thr(p)
        learning = (f"a search above σ_thr {thr * 1000:g} meV is labelled with {p.train.reference.code}, the model "
                    f"refitted and the search continued (≤ {e.learning_rounds} refits)"
                    if p.train is not None and e.learning_rounds else f"σ_thr {thr * 1000:g} meV monitored")
        lines += [f"minima hopping ({kind}) from {p.structure}: up to {e.n_minima} minima in {e.max_hops} hops, "
                  f"{learning}; keep ≤ {e.max_minima} within {e.energy_window_eV} eV (SOAP distance "
                  f"{e.soap_distance})",
                  f"NVT MD per minimum: {md.steps} × {md.timestep_fs} fs at {md.temperature_K} K, "
                  f"{md.n_samples} samples",
                  f"nmrshielding ({p.shielding.code}) per minimum and per sample"]
    if p.rates.rates_Hz is not None:
        lines.append(f"rates given for {len(p.rates.rates_Hz)} pair(s)")
    else:
        lines.append(f"CI-NEB ({p.rates.n_images} images) + vibrational analysis per minima pair, "
                     f"T = {p.rates.temperature_K} K" + (f"; each band's images checked with {p.train.reference.code}"
                                                         if p.train is not None else ""))
    lines.append(f"spectra: {s.isotope} at {s.field_T} T, {f'{s.spin_rate_Hz / 1000:g} kHz MAS' if s.mas else 'static'}, "
                 f"{s.orientation_scheme} {s.n_orientations} orientations, four panels of Fig. 5.1"
                 + (f", against {s.experimental}" if s.experimental else ""))
    return lines


def hopping_sigma_thr(protocol) -> float:
    e = protocol.exploration
    if e.sigma_thr_eV is not None:
        return e.sigma_thr_eV
    return protocol.train.sigma_thr_eV if protocol.train is not None else 0.05


def check_inputs(protocol) -> None:
    """Every file the protocol names is there (and the structure readable): the plan calls this, so --check
    (and a run) stops before anything starts, naming each missing file and its field."""
    from reactforge.schemas.loading import read_structure

    problems = []
    if protocol.structure is not None:
        try:
            read_structure(protocol.resolve(protocol.structure), "structure")
        except ValueError as err:
            problems.append(str(err))
    named = [(f"model.paths.{i}", name) for i, name in enumerate(protocol.model.paths)] if protocol.model else []
    if protocol.spectrum.experimental is not None:
        named.append(("spectrum.experimental", protocol.spectrum.experimental))
    problems += [f"field '{field}': no such file {str(protocol.resolve(name))!r}" for field, name in named
                 if not protocol.resolve(name).is_file()]
    if problems:
        raise ValueError("; ".join(problems))


def check_precomputed(protocol) -> None:
    """Every precomputed file is there and is a magres file with the tensors the run reads: the plan calls
    this, so a missing file stops --check (and a run) before anything starts, naming its field."""
    for i, m in enumerate(protocol.precomputed):
        named = [(f"precomputed.{i}.static", m.static)]
        named += [(f"precomputed.{i}.samples.{j}", s) for j, s in enumerate(m.samples)]
        for field, name in named:
            path = protocol.resolve(name)
            if not path.is_file():
                raise ValueError(f"field '{field}': no such file {str(path)!r}")
            try:
                atoms = tensors.read_magres(path, shielding=True)
            except Exception as err:  # noqa: BLE001 - ASE's reader fails on a non-magres file with any error
                raise ValueError(f"field '{field}': {path} is not a magres file with shielding tensors "
                                 f"({type(err).__name__}: {err})") from None
            if protocol.shielding.efg and "efg" not in atoms.arrays:
                raise ValueError(f"field '{field}': {path} has no EFG tensors (set shielding.efg: false "
                                 f"for shielding-only spectra)")


def run(protocol, engine, store, progress) -> dict:
    return NMRWorkflow(protocol, engine, store, progress).run()


class NMRWorkflow:
    def __init__(self, protocol, engine, store, progress):
        self.p, self.engine, self.store, self.progress = protocol, engine, store, progress
        self.model = None
        self.campaign = None  # with `train:`: the labels and reference the hops go on learning with
        self.hopping = None  # what the exploration found, for the summary
        if protocol.model is not None:
            m = protocol.model
            self.model = store.model_ref(m.model, [protocol.resolve(x) for x in m.paths], m.uncertainty)

    # ------------------------------------------------------------------ the workflow, in the thesis's order
    def run(self) -> dict:
        training = None
        if self.p.train is not None:
            training = self.train_model()
        if self.p.precomputed:
            minima, static, samples = self.read_precomputed()
        else:
            minima = self.explore()  # §5.3.1
            md_samples = self.sample_md(minima)
            static, samples = self.shielding(minima, md_samples)
        fast = [averaging.average_results(s) if s else None for s in samples]  # Eq. 5.10
        K, p_eq, rate_table = self.rate_matrix(minima)
        panels, scores, report = self.spectra(static, fast, K, p_eq)
        summary = {
            "n_minima": len(minima),
            "exploration": self.hopping,
            "populations": p_eq.tolist(),
            "rates": rate_table,
            "sites": self.site_table(static, fast),
            "similarity": scores,
            "report": report,
        }
        if training is not None:
            summary["training"] = training
        self.store.write_json("nmr/summary.json", summary)
        out = {"nmr": summary}
        if self.model is not None:
            out["model"] = self.model.model_dump(mode="json")
        return out

    def start(self) -> Atoms:
        """The start structure; a molecule or cluster given without a cell is centred in a box (non-periodic):
        fitters and MD need one, and a shielding code reads the same coordinates."""
        atoms = read(self.p.resolve(self.p.structure))
        if not atoms.pbc.any() and atoms.cell.rank < 3:
            box = (self.p.train.isolated_box_A if self.p.train is not None else 12.0)
            atoms.set_cell([max(box, np.ptp(atoms.positions, axis=0).max() + 8.0)] * 3)
            atoms.center()
        return atoms

    # ------------------------------------------------------------------ the MLFF, when trained here
    def train_model(self) -> dict:
        """Thesis §3.2's MD loop on the start structure (schemas.nmr.NMRTraining): E0s and rattled copies
        labelled, then MD at each temperature in turn until a full run stays below σ_thr."""
        from reactforge.schemas.tasks import ISOLATED_ATOM

        from .active_learning import Campaign
        from .catalysis_build import isolated_atoms

        t = self.p.train
        campaign = self.campaign = Campaign(self.engine, self.store, self.progress, t.reference, t.model,
                                            max_force_eV_per_A=t.max_force_eV_per_A, seed=t.seed)
        start = self.start()
        self.progress.set_stage(f"MLFF training: {t.n_rattled} rattled copies of the structure and the E0s")
        rng = np.random.default_rng(t.seed)
        rattled = [start.copy()]
        for _ in range(t.n_rattled):
            a = start.copy()
            a.positions += rng.normal(0.0, t.rattle_sigma_A, a.positions.shape)
            rattled.append(a)
        elements = sorted(set(start.get_chemical_symbols()))
        # the E0s are neutral atoms' whatever the molecule's charge
        neutral = t.reference.model_copy(update={"charge": 0}) if getattr(t.reference, "charge", 0) else None
        labels = [campaign.label(isolated_atoms(elements, t.isolated_box_A), block="nmr-initial", iteration=0,
                                 reason="isolated atom", config_type=ISOLATED_ATOM, reference=neutral),
                  campaign.label(rattled, block="nmr-initial", iteration=0, reason="rattled structure")]
        campaign.wait_labels()
        blocks = {"nmr-initial": {"labels_added": sum(x.added for x in labels),
                                  "labels_failed": sum(x.failed for x in labels)}}
        for T in t.temperatures_K:
            md = {"temperature_K": T, "steps": t.md_steps, "timestep_fs": t.timestep_fs,
                  "sigma_thr_eV": t.sigma_thr_eV, "fixed_atoms": self.p.fixed_atoms}
            report = campaign.md_block(f"nmr-md-{T:g}K", [start], md, t.max_iterations)
            blocks[report.name] = {k: v for k, v in report.as_dict().items() if k != "breach_trace"}
        self.model = campaign.model
        self.progress.log(f"MLFF trained on {self.store.count()} labels: {self.model.sha256[:12]}")
        return {"blocks": blocks, "labels": self.store.count(), "model": self.model.model_dump(mode="json")}

    # ------------------------------------------------------------------ §5.3.1 exploration of dynamic events
    def explore(self) -> list[Atoms]:
        """Minima hopping from the start structure (workflows/hopping.py): with `train:` a search that
        breaches σ_thr is labelled, the model refitted and the search continued from its last minimum; the
        minima of superseded models are relaxed again with the final one. Then the lowest distinct minima
        within the energy window."""
        from .hopping import HOPPING_CRITERION, Start, hop_rounds, relax_again

        e = self.p.exploration
        block = "nmr-hopping"
        learn = self.campaign is not None and e.learning_rounds > 0
        report = BlockReport(block, criterion=HOPPING_CRITERION)
        starts = {("structure", 0): Start(self.start())}

        def spec(model, seed, hops, n_minima, sigma_thr_eV, T0_K):
            return MinimaHoppingSpec(model=model, T0_K=T0_K or e.T0_K, Ediff0_eV=e.Ediff0_eV, mdmin=e.mdmin,
                                     fmax_eV_per_A=e.fmax_eV_per_A, timestep_fs=e.timestep_fs, n_minima=n_minima,
                                     max_hops=hops, max_optimisation_steps=e.max_optimisation_steps,
                                     fixed_atoms=self.p.fixed_atoms, sigma_thr_eV=sigma_thr_eV, seed=seed)

        self.model = hop_rounds(self.engine, self.progress, starts, model=self.model, spec=spec,
                                seed=lambda key, iteration: e.seed + 100_000 * iteration, max_hops=e.max_hops,
                                n_minima=e.n_minima, sigma_thr_eV=hopping_sigma_thr(self.p),
                                campaign=self.campaign if learn else None,
                                max_iterations=e.learning_rounds if learn else 0, report=report, block=block)
        relax_again(self.engine, self.progress, starts, self.model, fixed_atoms=self.p.fixed_atoms,
                    fmax_eV_per_A=e.fmax_eV_per_A, max_steps=e.max_optimisation_steps, report=report, block=block)
        found = [(m, en, sig) for m, en, sig, _ in starts[("structure", 0)].found]
        if not found:
            raise RuntimeError("minima hopping found no minimum (see the log for the failed searches)")
        kept = []
        for m, en, sig in sorted(found, key=lambda x: x[1]):
            if en - min(x[1] for x in found) > e.energy_window_eV or len(kept) == e.max_minima:
                break
            if all(soap_distance(m, k[0]) >= e.soap_distance for k in kept):
                kept.append((m, en, sig))
        self.progress.log(f"{len(found)} minima visited, {len(kept)} distinct kept: "
                          + ", ".join(f"{en - kept[0][1]:+.3f} eV" for _, en, _ in kept))
        start = self.start()
        kept = [(superposed(m, start), en, sig) for m, en, sig in kept]  # the start's frame (a molecule's)
        self.hopping = {"hops": starts[("structure", 0)].hops, "minima_visited": len(found),
                        "minima": [{"energy_eV": en, "relative_energy_eV": en - kept[0][1], "sigma_eV": sig}
                                   for _, en, sig in kept],
                        "learning": {**{k: v for k, v in report.as_dict().items() if k != "breach_trace"},
                                     "enabled": learn, "sigma_thr_eV": hopping_sigma_thr(self.p)}}
        if learn:
            self.hopping["learning"]["labels_in_training_set"] = self.store.count()
        return [m for m, _, _ in kept]

    def sample_md(self, minima: list[Atoms]) -> list[list[Atoms]]:
        """n_samples MD segments per minimum, each continuing the last; the segment ends are the samples (a
        molecule's in its minimum's frame: `superposed`).
        A segment whose per-atom σ exceeds sampling.sigma_thr_eV ends that minimum's sampling: configurations
        outside the model's domain are not worth a shielding calculation."""
        md = self.p.sampling
        if md.n_samples == 0:
            return [[] for _ in minima]
        self.progress.set_stage(f"NVT MD at {len(minima)} minima")
        per_segment = max(1, md.steps // md.n_samples)
        current: list[Atoms | None] = list(minima)
        samples: list[list[Atoms]] = [[] for _ in minima]
        for seg in range(md.n_samples):  # minima in parallel, segments in sequence
            futs = {i: self.engine.submit(MDSpec(model=self.model, temperature_K=md.temperature_K,
                                                 timestep_fs=md.timestep_fs, steps=per_segment,
                                                 friction_per_fs=md.friction_per_fs, sigma_thr_eV=md.sigma_thr_eV,
                                                 seed=md.seed + 1000 * i + seg, fixed_atoms=self.p.fixed_atoms),
                                          [a]) for i, a in enumerate(current) if a is not None}
            for i, fut in futs.items():
                res = _ok(fut, self.progress)
                if res is None or res.breached:
                    why = "failed" if res is None else f"reached σ = {res.max_sigma_eV:.3f} eV"
                    self.progress.log(f"minimum {i}: MD segment {seg} {why}; {len(samples[i])} samples kept")
                    current[i] = None
                    continue
                current[i] = res.final
                samples[i].append(superposed(res.final, minima[i]))  # the minimum's frame (a molecule's)
        return samples

    def shielding(self, minima, md_samples):
        self.progress.set_stage("shielding tasks")
        spec = self.p.shielding
        static_f = [self.engine.submit(spec, [m]) for m in minima]
        sample_f = [[self.engine.submit(spec, [a]) for a in s] for s in md_samples]
        static = [f.result() for f in static_f]
        samples = [[r for r in (_ok(f, self.progress) for f in fs) if r is not None] for fs in sample_f]
        return static, samples

    def read_precomputed(self):
        self.progress.set_stage("reading magres files")

        def spec(path):
            return NMRShieldingSpec(code="precomputed", magres_file=str(self.p.resolve(path)), efg=self.p.shielding.efg)

        static_f = [self.engine.submit(spec(m.static), []) for m in self.p.precomputed]
        sample_f = [[self.engine.submit(spec(s), []) for s in m.samples] for m in self.p.precomputed]
        static = [f.result() for f in static_f]
        samples = [[f.result() for f in fs] for fs in sample_f]
        return [r.atoms for r in static], static, samples

    # ------------------------------------------------------------------ rates: NEB + harmonic TST
    def rate_matrix(self, minima: list[Atoms]):
        r, n = self.p.rates, len(minima)
        if n == 1:
            return np.zeros((1, 1)), np.ones(1), []
        if r.rates_Hz is not None:
            if r.populations is not None:
                p_eq = np.asarray(r.populations, float) / np.sum(r.populations)
            elif self.model is not None:
                energies = self.engine.run(EvaluateSpec(model=self.model), minima).energies_eV
                p_eq = rates.harmonic_populations(energies, None, r.temperature_K)
            else:
                p_eq = np.full(n, 1.0 / n)
            K = exchange.detailed_balance_rate_matrix(p_eq, {(i, j): k for i, j, k in r.rates_Hz})
            return K, p_eq, [{"i": i, "j": j, "k_Hz": k, "source": "given"} for i, j, k in r.rates_Hz]

        self.progress.set_stage(f"NEB between {n * (n - 1) // 2} minima pairs, vibrations of {n} minima")
        spec = NEBSpec(model=self.model, n_images=r.n_images, fmax_eV_per_A=r.fmax_eV_per_A,
                       max_steps=r.max_steps, fixed_atoms=self.p.fixed_atoms, rattle_A=r.neb_rattle_A)
        pairs = list(combinations(range(n), 2))
        futs = {pair: self.engine.submit(spec, [minima[pair[0]], superposed(minima[pair[1]], minima[pair[0]])])
                for pair in pairs}
        vib_atoms = r.vibration_atoms or [i for i in range(len(minima[0])) if i not in set(self.p.fixed_atoms)]
        vib_spec = VibrationsSpec(model=self.model, indices=vib_atoms, delta_A=r.vibration_delta_A)
        vib_min = [self.engine.submit(vib_spec, [m]) for m in minima]
        # each saddle's vibrations start as soon as its NEB is done
        # with `train:`, the band is checked against the reference it was trained on: single points of its
        # images (not labels; the model is not refitted here)
        check = (SinglePointSpec(reference=self.p.train.reference, max_force_eV_per_A=1e6)
                 if self.p.train is not None else None)
        nebs, vib_ts, band_ref = {}, {}, {}
        for fut in as_completed(set(futs.values())):
            for pair in (p for p, f in futs.items() if f is fut):
                nebs[pair] = _ok(fut, self.progress)
                if nebs[pair] is not None:
                    ts = nebs[pair].images[int(np.argmax(nebs[pair].energies_eV))]
                    vib_ts[pair] = self.engine.submit(vib_spec, [ts])
                    if check is not None:
                        band_ref[pair] = [self.engine.submit(check, [a]) for a in nebs[pair].images]
        self.progress.set_stage("vibrational analysis")
        at_minima = [f.result() for f in vib_min]
        freqs = [v.frequencies() for v in at_minima]
        energies = [v.energy_eV for v in at_minima]
        p_eq = rates.harmonic_populations(energies, freqs, r.temperature_K, r.n_zero_modes)
        forward, table = {}, []
        for i, j in pairs:
            neb = nebs[(i, j)]
            if neb is None:
                table.append({"i": i, "j": j, "status": "neb failed"})
                continue
            saddle = _ok(vib_ts[(i, j)], self.progress)
            if saddle is None:
                table.append({"i": i, "j": j, "status": "saddle vibrations failed"})
                continue
            f_ts = saddle.frequencies()
            e_ts = max(neb.energies_eV)
            lo = i if energies[i] <= energies[j] else j  # rate out of the lower minimum; reverse by balance
            try:
                nu = rates.vineyard_prefactor_Hz(freqs[lo], f_ts, r.n_zero_modes)
            except ValueError as err:
                table.append({"i": i, "j": j, "status": f"no rate: {err}"})
                continue
            k = rates.harmonic_tst_rate_Hz(e_ts - energies[lo], r.temperature_K, nu)
            forward[(lo, j if lo == i else i)] = k
            row = {"i": i, "j": j, "barrier_eV": e_ts - energies[lo], "from": lo, "prefactor_Hz": nu,
                   "k_Hz": k, "k_eyring_Hz": rates.eyring_rate_Hz(e_ts - energies[lo], r.temperature_K),
                   "neb_converged": neb.converged, "max_sigma_eV": neb.max_sigma_eV}
            if (i, j) in band_ref:
                ref = [getattr(_ok(f, self.progress), "energy_eV", None) for f in band_ref[(i, j)]]
                start = ref[0] if lo == i else ref[-1]
                if None not in ref:
                    # the reference's barrier along the MLFF's band (its own saddle can only be lower)
                    row["reference_barrier_on_band_eV"] = max(ref) - start
                    row["reference_energies_on_band_eV"] = [e - start for e in ref]
                    row["k_reference_on_band_Hz"] = rates.harmonic_tst_rate_Hz(max(ref) - start, r.temperature_K, nu)
                    self.progress.log(f"minima {i}–{j}: barrier {row['barrier_eV']:.3f} eV with the MLFF, "
                                      f"{max(ref) - start:.3f} eV along its band with {check.reference.code}")
            table.append(row)
        return exchange.detailed_balance_rate_matrix(p_eq, forward), p_eq, table

    # ------------------------------------------------------------------ Fig. 5.1
    def nuclei(self, atoms: Atoms) -> list[int]:
        s = self.p.spectrum
        return s.nuclei if s.nuclei is not None else [i for i, x in enumerate(atoms.get_chemical_symbols())
                                                      if x == s.element]

    def stacks(self, tensor_sets):
        """(δ, Q) stacks (n_minima, n_nuclei, 3, 3) from per-minimum (σ, V) of all atoms."""
        s = self.p.spectrum
        idx = self.nuclei_idx
        delta = np.array([tensors.chemical_shift(np.asarray(sig)[idx], s.sigma_ref_ppm) for sig, _ in tensor_sets])
        if not self.quadrupolar or any(v is None for _, v in tensor_sets):
            return delta, None
        Q = np.array([tensors.quadrupole_tensor_Hz(np.asarray(v)[idx], s.isotope) for _, v in tensor_sets])
        return delta, Q

    def spectra(self, static, fast, K, p_eq):
        s = self.p.spectrum
        self.progress.set_stage("spectra")
        self.nuclei_idx = self.nuclei(static[0].atoms)
        if not self.nuclei_idx:
            raise ValueError(f"no {s.element} atoms to observe")
        exp = spectra.Experiment(isotope=s.isotope, field_T=s.field_T, mas=s.mas, spin_rate_Hz=s.spin_rate_Hz,
                                 fwhm_Hz=s.fwhm_Hz,
                                 ppm_min=s.ppm_min, ppm_max=s.ppm_max, n_points=s.n_points,
                                 orientation_scheme=s.orientation_scheme, n_orientations=s.n_orientations)
        static_stack = self.stacks([(r.shielding_ppm, r.efg_au) for r in static])
        fast_stack = self.stacks(fast) if all(f is not None for f in fast) else None
        panels = spectra.four_panels(static_stack, fast_stack, K, p_eq, exp)
        axis = exp.axis_ppm
        scores, experimental = {}, None
        if s.experimental:
            experimental = spectra.load_experimental(self.p.resolve(s.experimental))
            scores = {k: spectra.similarity(axis, v.sum(axis=0), *experimental, s.score_window_ppm)
                      for k, v in panels.items()}
        symbols = static[0].atoms.get_chemical_symbols()
        labels = [f"{symbols[i]}{i}" for i in self.nuclei_idx]
        png = "report/nmr_spectra.png"
        with self.store.atomic_path(png) as tmp:
            spectra.plot_panels(tmp, axis, panels, labels, experimental, scores)
        self.store.write_json("nmr/spectra.json", {"ppm": axis.tolist(), "nuclei": labels,
                                                   **{k: v.tolist() for k, v in panels.items()}})
        return panels, scores, {"png": png, "data": "nmr/spectra.json"}

    @property
    def quadrupolar(self) -> bool:
        """Half-integer spin ≥ 3/2: the central transition carries the second-order quadrupolar shift."""
        return tensors.isotope_data(self.p.spectrum.isotope).spin >= 1.5

    def site_table(self, static, fast) -> list[dict]:
        s = self.p.spectrum
        rows = []
        for m, res in enumerate(static):
            sets = {"static": (np.asarray(res.shielding_ppm), res.efg_au)}
            if fast[m] is not None:
                sets["fast"] = fast[m]
            for a in self.nuclei_idx:
                row = {"minimum": m, "atom": a}
                for name, (sig, v) in sets.items():
                    row[f"{name}_delta_iso_ppm"] = float(s.sigma_ref_ppm - tensors.isotropic(np.asarray(sig)[a]))
                    if v is not None and self.quadrupolar:
                        row[f"{name}_CQ_MHz"] = float(tensors.cq_Hz(np.asarray(v)[a], s.isotope) / 1e6)
                        row[f"{name}_eta_Q"] = float(tensors.eta_q(np.asarray(v)[a]))
                rows.append(row)
        return rows


def superposed(atoms: Atoms, onto: Atoms) -> Atoms:
    """`atoms` turned and moved onto `onto` (atom i on atom i, mass-weighted least squares: the Eckart frame)
    when neither is periodic. A free molecule turns as a whole during minima hopping and MD; held in a lattice
    (the thesis's MOF) it would not, so the minima are put in the start structure's frame and each MD sample
    in its minimum's: otherwise a jump between minima, or the average over samples, would also turn the
    tensors by the molecule's tumbling, and a band interpolated between two orientations would turn it too."""
    if atoms.pbc.any() or onto.pbc.any():
        return atoms
    w = atoms.get_masses()[:, None]
    centre, target = (w * atoms.positions).sum(0) / w.sum(), (w * onto.positions).sum(0) / w.sum()
    p, q = atoms.positions - centre, onto.positions - target
    u, _, vt = np.linalg.svd((w * p).T @ q)
    d = np.sign(np.linalg.det(vt.T @ u.T))  # a rotation, not a reflection
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    out = atoms.copy()
    out.positions = p @ rotation.T + target
    return out


def _ok(fut: Future, progress):
    try:
        return fut.result()
    except TaskFailed as err:
        first = err.message.splitlines()[0] if err.message else ""
        progress.log(f"{err.kind} task failed ({err.failure_class}): {first}")
        return None


def soap_distance(a: Atoms, b: Atoms, cutoff_A: float = 4.0) -> float:
    """Largest per-atom SOAP distance between two minima, atom i against atom i (workflows/minima.py).

    Per atom rather than per structure, and without pairing like atoms: minima related by a symmetry that
    permutes nuclei (a hydroxyl turned by 180°) have identical averaged descriptors but are distinct NMR
    environments."""
    if a.get_chemical_symbols() != b.get_chemical_symbols():
        raise ValueError("minima must have the same atoms in the same order")
    soap = dedup.descriptor(a.get_chemical_symbols(), cutoff_A, l_max=4, n_max=6, atom_sigma_A=0.5)
    every = range(len(a))
    return dedup.distance(dedup.environments(a, every, soap), dedup.environments(b, every, soap),
                           a.get_chemical_symbols(), match_like_atoms=False)
