"""Figures and an HTML page for a catalysis run (thesis Figs. 3.2-3.4, Table A.1).

Every function takes plain data (dicts and lists, as the workflow collects them and as they sit in
summary.json) and writes one PNG; `write_report` writes every figure it has data for plus
`index.html` with the summary tables. Nothing here computes with a model: the parity plot's MLFF
numbers come from `evaluate` tasks (`evaluate_training_set`). Files are written through the store's
atomic-write helper (a temporary name, renamed when complete).
"""
from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from ase import Atoms  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from ase.constraints import FixAtoms  # noqa: E402

from reactforge.engine.store import atomic_file, atomic_write_text  # noqa: E402
from reactforge.schemas.protocol import BLOCK_NAMES  # noqa: E402
from reactforge.schemas.tasks import ISOLATED_ATOM_TYPES, EvaluateSpec  # noqa: E402

from .catalysis import BLOCKS  # noqa: E402

BLOCK_LABELS = {n: f"{n} {block.title}" for n, block in BLOCKS.items()}


def _save(fig, path: Path) -> Path:
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def training_growth(rows: Sequence[Mapping], path: Path) -> Path:
    """Training-set growth per block (Table A.1 as a figure).

    rows: one per (block, iteration, reason) with keys `block` (int 0-6), `iteration` (int),
    `reason` (str, e.g. "threshold breach", "dimer", "placement") and `count` (labels added).
    Bars: labels added per block, stacked by reason; line: cumulative training-set size."""
    if not rows:
        raise ValueError("training_growth: no rows")
    blocks = sorted({int(r["block"]) for r in rows})
    reasons = sorted({str(r["reason"]) for r in rows})
    counts = {(b, s): 0 for b in blocks for s in reasons}
    for r in rows:
        counts[(int(r["block"]), str(r["reason"]))] += int(r["count"])
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(blocks))
    bottom = np.zeros(len(blocks))
    colours = plt.get_cmap("tab20").colors  # up to 20 reasons, each its own colour
    for k, reason in enumerate(reasons):
        h = np.array([counts[(b, reason)] for b in blocks], dtype=float)
        ax.bar(x, h, bottom=bottom, label=reason, color=colours[k % len(colours)])
        bottom += h
    ax2 = ax.twinx()
    ax2.plot(x, np.cumsum(bottom), "k-o", label="training set")
    ax2.set_ylabel("training configurations (cumulative)")
    ax2.set_ylim(0, max(1.0, np.cumsum(bottom)[-1]) * 1.1)
    ax.set_xticks(x, [BLOCK_LABELS.get(b, str(b)) for b in blocks], rotation=25, ha="right")
    ax.set_xlabel("active-learning block")
    ax.set_ylabel("labels added (configurations)")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("Training-set growth per active-learning block")
    return _save(fig, path)


def sigma_trace(
    steps: Sequence[int],
    sigma_eV: Sequence[Sequence[float]],
    path: Path,
    sigma_thr_eV: float = 0.05,
    timestep_fs: float = 1.0,
    symbols: Sequence[str] | None = None,
    highlight: Sequence[int] | None = None,
    title: str = "",
) -> Path:
    """Per-atom σ along an MD run (Fig. 3.2): one line per atom, highlighted atoms (the adsorbate)
    coloured by element, the rest grey, σ_thr dashed and the first breach marked.

    steps: MD steps at which σ was evaluated (MDResult.trace_steps); sigma_eV: per step, per atom
    (MDResult.sigma_trace_eV)."""
    s = np.asarray(sigma_eV, dtype=float)
    t = np.asarray(steps, dtype=float) * timestep_fs
    if s.ndim != 2 or len(t) != s.shape[0]:
        raise ValueError("sigma_trace: sigma_eV must be steps × atoms and match steps")
    hl = set(highlight or [])
    fig, ax = plt.subplots(figsize=(7, 4))
    for i in range(s.shape[1]):
        if i in hl:
            continue
        ax.plot(t, s[:, i] * 1000, color="0.75", lw=0.8)
    for i in sorted(hl):
        label = f"{symbols[i]}{i}" if symbols is not None else str(i)
        ax.plot(t, s[:, i] * 1000, lw=1.6, label=label)
    ax.axhline(sigma_thr_eV * 1000, ls="--", color="k", label="σ_thr")
    breach = np.nonzero(s.max(axis=1) > sigma_thr_eV)[0]
    if len(breach):
        k = breach[0]
        ax.plot(t[k], s[k].max() * 1000, "r*", ms=14, label=f"breach at {t[k]:.0f} fs")
    ax.set_xlabel("time (fs)")
    ax.set_ylabel("per-atom σ (meV)")
    ax.set_title(title or "Predicted local-energy uncertainty during MD")
    if hl or len(breach):
        ax.legend(fontsize=7)
    return _save(fig, path)


def barrier_history(history: Mapping[str, Sequence[Mapping]], path: Path,
                    final_reference_eV: Mapping[str, float | None] | None = None, band_eV: float = 0.05) -> Path:
    """Barrier vs NEB active-learning iteration (Fig. 3.4), with a ±band_eV band around each reaction's
    reference barrier (`final_reference_eV`, the validation's; else the last iteration's reference value).

    history: reaction name -> list of {"iteration": int, "mlff_barrier_eV": float,
    "reference_barrier_eV": float | None} (the reference value is the highest labelled image of
    that iteration's path, relative to its initial image, when known)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (name, rows) in enumerate(history.items()):
        color = f"C{k}"
        it = [r["iteration"] for r in rows]
        ax.plot(it, [r["mlff_barrier_eV"] for r in rows], "-o", color=color, label=f"{name} MLFF")
        ref = [(r["iteration"], r["reference_barrier_eV"]) for r in rows if r.get("reference_barrier_eV") is not None]
        if ref:
            ax.plot(*zip(*ref), "s--", color=color, mfc="none", label=f"{name} reference")
        target = (final_reference_eV or {}).get(name)
        if target is None and ref:
            target = ref[-1][1]
        if target is not None:  # the thesis's target: within 50 meV of the reference barrier (Fig. 3.4)
            ax.axhspan(target - band_eV, target + band_eV, color=color, alpha=0.12,
                       label=f"{name} reference ± {band_eV * 1000:.0f} meV")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("NEB iteration")
    ax.set_ylabel("forward barrier (eV)")
    ax.set_title("Energy barrier throughout active learning")
    ax.legend(fontsize=7)
    return _save(fig, path)


def energy_profile(profiles: Mapping[str, Mapping], path: Path) -> Path:
    """Reaction energy profile, MLFF vs reference (Fig. 3.3c): the reactions' paths side by side.

    profiles: reaction name -> {"mlff_eV": [image energies], "reference_eV": [image energies] or None}
    (absolute or relative; each path is drawn relative to its own initial image)."""
    fig, ax = plt.subplots(figsize=(8, 4))
    offset = 0
    ticks, labels = [], []
    for k, (name, p) in enumerate(profiles.items()):
        m = np.asarray(p["mlff_eV"], dtype=float)
        x = offset + np.arange(len(m))
        ax.plot(x, m - m[0], "-", color="C2", lw=2, label="MLFF" if k == 0 else None)
        ref = p.get("reference_eV")
        if ref is not None:
            r = np.asarray(ref, dtype=float)
            if len(r) != len(m):
                raise ValueError(f"energy_profile: {name}: reference and MLFF paths differ in length")
            ax.plot(x, r - r[0], "ko", ms=4, label="reference" if k == 0 else None)
        ticks.append(x.mean())
        labels.append(name)
        offset += len(m) + 1
    ax.set_xticks(ticks, labels, rotation=15)
    ax.set_xlabel("band image, reaction by reaction")
    ax.set_ylabel("E − E(initial) (eV)")
    ax.set_title("Reaction energy profile")
    ax.legend()
    return _save(fig, path)


def mechanism_profile(points: Sequence[Mapping], path: Path) -> Path:
    """The whole mechanism on one energy axis, MLFF vs reference (Fig. 3.3c): one level per state, the
    intermediates at their adsorption energies, each transition state at its initial state's plus the
    barrier, consecutive levels joined by dashed lines.

    points: `summary["adsorption"]["profile"]` (workflows/adsorption.mechanism_profile): {label, kind
    ("intermediate" | "ts"), mlff_eV, reference_eV}; a None energy leaves a gap in that curve."""
    if not points:
        raise ValueError("mechanism_profile: no points")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(points)), 4))
    half = 0.3
    for key, color, name in (("mlff_eV", "C2", "MLFF"), ("reference_eV", "k", "reference")):
        previous, legend = None, name
        for k, p in enumerate(points):
            e = p.get(key)
            if e is None:
                previous = None
                continue
            ts = p.get("kind") == "ts"
            ax.hlines(e, k - half, k + half, color=color, lw=1.5 if ts else 3,
                      linestyles="dotted" if ts else "solid", label=legend)
            legend = None
            if previous is not None:
                ax.plot([k - 1 + half, k - half], [previous, e], "--", color=color, lw=0.8)
            previous = e
    ax.set_xticks(range(len(points)), [p["label"] for p in points], rotation=25, ha="right")
    ax.set_xlabel("state along the mechanism")
    ax.set_ylabel("E − E(site slab) − Σ n μ (eV)")
    ax.set_title("Mechanism: adsorption energies and transition states")
    ax.margins(y=0.25)  # room for the legend above and below the levels
    ax.legend(fontsize=8)
    return _save(fig, path)


def _iteration_label(row: Mapping) -> str:
    block = row.get("block")
    number = _BLOCK_NUMBER.get(str(block), block)
    return f"{number}.{row.get('iteration')}"


def adsorption_error(iterations: Sequence[Mapping], path: Path) -> Path:
    """Adsorption-energy error across block-5 and block-6 iterations (Supp. Fig. 1): the mean absolute
    error over the intermediates and each intermediate's |MLFF − reference|, in meV.

    iterations: `summary["adsorption"]["iterations"]` ({block, iteration, intermediates: {name:
    {error_eV}}, mae_eV}); the x axis is block.iteration."""
    if not iterations:
        raise ValueError("adsorption_error: no iterations")
    x = np.arange(len(iterations))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(iterations)), 4))
    names = sorted({n for row in iterations for n in row.get("intermediates", {})})
    for name in names:
        err = [row.get("intermediates", {}).get(name, {}).get("error_eV") for row in iterations]
        ax.plot(x, [np.nan if e is None else abs(e) * 1000 for e in err], ".-", lw=0.8, alpha=0.6, label=name)
    mae = [np.nan if row.get("mae_eV") is None else row["mae_eV"] * 1000 for row in iterations]
    ax.plot(x, mae, "k-o", lw=2, label="mean absolute error")
    for k in range(1, len(iterations)):  # where block 6 takes over from block 5
        if iterations[k].get("block") != iterations[k - 1].get("block"):
            ax.axvline(k - 0.5, color="0.6", ls=":")
    ax.set_xticks(x, [_iteration_label(row) for row in iterations])
    ax.set_xlabel("block.iteration")
    ax.set_ylabel("|E_ads(MLFF) − E_ads(reference)| (meV)")
    ax.set_ylim(bottom=0)
    ax.set_title("Adsorption energy error across iterations")
    ax.legend(fontsize=7)
    return _save(fig, path)


def parity(
    reference_energy_eV_per_atom: Sequence[float],
    mlff_energy_eV_per_atom: Sequence[float],
    reference_forces_eV_per_A: Sequence[float],
    mlff_forces_eV_per_A: Sequence[float],
    path: Path,
) -> Path:
    """Energy (per atom) and force-component parity plots with RMSEs."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
    for ax, ref, ml, unit, scale, name, axis_unit in (
        (axes[0], reference_energy_eV_per_atom, mlff_energy_eV_per_atom, "meV/atom", 1000, "energy", "eV/atom"),
        (axes[1], reference_forces_eV_per_A, mlff_forces_eV_per_A, "eV/Å", 1, "force component", "eV/Å"),
    ):
        a, b = np.asarray(ref, dtype=float).ravel(), np.asarray(ml, dtype=float).ravel()
        if a.shape != b.shape or a.size == 0:
            raise ValueError(f"parity: {name} lists must be non-empty and of equal length")
        rmse = float(np.sqrt(np.mean((a - b) ** 2))) * scale
        ax.plot(a, b, ".", ms=3, alpha=0.6)
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        pad = 0.05 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal", adjustable="box")  # a square panel: deviations read the same on both axes
        ax.set_xlabel(f"reference {name} ({axis_unit})")
        ax.set_ylabel(f"MLFF {name} ({axis_unit})")
        ax.set_title(f"{name}: RMSE {rmse:.3g} {unit}")
    fig.suptitle("MLFF vs reference on the labelled configurations")
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# From run objects to plain data
# ----------------------------------------------------------------------------------------------

_BLOCK_NUMBER = {name: n for n, name in BLOCK_NAMES.items()}


def growth_rows(training_set: Sequence) -> list[dict]:
    """Labels per (block, iteration, reason) from the labelled structures' provenance."""
    counts: dict[tuple, int] = {}
    for a in training_set:
        block = a.info.get("block", "?")
        b = block if isinstance(block, (int, np.integer)) else _BLOCK_NUMBER.get(str(block), -1)
        key = (int(b), int(a.info.get("iteration", 0)), str(a.info.get("reason", "label")))
        counts[key] = counts.get(key, 0) + 1
    return [{"block": b, "iteration": i, "reason": r, "count": n} for (b, i, r), n in sorted(counts.items())]


def breach_traces(summary: Mapping, max_atoms: int = 8) -> list[dict]:
    """σ traces of the first breaching MD of each block (the atoms with the largest σ highlighted)."""
    out = []
    for key, block in (summary.get("blocks") or {}).items() if isinstance(summary.get("blocks"), Mapping) \
            else enumerate(summary.get("blocks") or []):
        tr = block.get("breach_trace") if isinstance(block, Mapping) else None
        if not tr:
            continue
        s = np.asarray(tr["sigma_eV"], dtype=float)
        top = [int(i) for i in np.argsort(s.max(axis=0))[::-1][:max_atoms]]
        out.append({"steps": tr["steps"], "sigma_eV": tr["sigma_eV"], "symbols": tr.get("symbols"),
                    "sigma_thr_eV": tr.get("sigma_thr_eV", 0.05), "highlight": top,
                    "title": f"{block.get('name', key)}: per-atom σ, iteration {tr.get('iteration', '?')}"})
    return out


def barrier_rows(neb_history: Sequence[Mapping]) -> dict[str, list[dict]]:
    hist: dict[str, list[dict]] = {}
    for row in neb_history:
        for name, v in row.items():
            if name == "iteration" or not isinstance(v, Mapping):
                continue
            hist.setdefault(name, []).append({"iteration": row["iteration"], "mlff_barrier_eV": v["mlff_barrier_eV"],
                                              "reference_barrier_eV": v.get("reference_barrier_eV")})
    return hist


def block6_rows(neb_history: Sequence[Mapping]) -> list[dict]:
    """One row per block-6 iteration and reaction: its barrier and both termination measures."""
    return [{"iteration": row["iteration"], "reaction": name, **v} for row in neb_history
            for name, v in row.items() if isinstance(v, Mapping)]


def profile_rows(neb_history: Sequence[Mapping], paths: Mapping, validation: Mapping | None = None) -> dict[str, dict]:
    """The last MLFF band of each reaction; its reference energies where every image was labelled, else
    the validation's reference NEB started from that band (block 6 labels the interior images only)."""
    out: dict[str, dict] = {}
    for row in neb_history:
        for name, v in row.items():
            if isinstance(v, Mapping) and "mlff_energies_eV" in v:
                ref = v.get("reference_energies_eV")
                ok = ref is not None and np.all(np.isfinite(np.asarray(ref, dtype=float)))
                if not ok:
                    ref = (validation or {}).get(name, {}).get("reference_energies_eV")
                    ok = ref is not None and len(ref) == len(v["mlff_energies_eV"])
                out[name] = {"mlff_eV": v["mlff_energies_eV"], "reference_eV": ref if ok else None}
    for name, p in paths.items():
        if name not in out and isinstance(p, Mapping) and "energies_eV" in p:
            out[name] = {"mlff_eV": p["energies_eV"], "reference_eV": None}
    return out


def fitted_configurations(training_set: Sequence) -> list:
    """The labelled structures a parity plot compares: isolated atoms are left out (they set the E0s
    rather than being fitted configurations)."""
    return [a for a in training_set if "REF_energy" in a.info and "REF_forces" in a.arrays
            and a.info.get("config_type") not in ISOLATED_ATOM_TYPES]


def parity_rows(structures: Sequence, mlff_energies_eV: Sequence[float],
                mlff_forces_eV_per_A: Sequence) -> dict | None:
    """MLFF vs reference on labelled structures (energies per atom, force components): the reference from
    each structure's REF_energy / REF_forces, the MLFF's from an evaluate task on the same structures."""
    if len(structures) != len(mlff_energies_eV) or len(structures) != len(mlff_forces_eV_per_A):
        raise ValueError("parity_rows: one MLFF energy and force array per structure")
    e_ref, e_ml, f_ref, f_ml = [], [], [], []
    for a, e, f in zip(structures, mlff_energies_eV, mlff_forces_eV_per_A):
        e_ml.append(float(e) / len(a))
        e_ref.append(float(a.info["REF_energy"]) / len(a))
        f_ml.extend(np.asarray(f, dtype=float).ravel())
        f_ref.extend(np.asarray(a.arrays["REF_forces"]).ravel())
    if not e_ref:
        return None
    return {"reference_energy_eV_per_atom": e_ref, "mlff_energy_eV_per_atom": e_ml,
            "reference_forces_eV_per_A": f_ref, "mlff_forces_eV_per_A": f_ml}


def _configuration(atoms: Atoms) -> Atoms:
    """What an evaluation depends on: numbers, positions, cell, pbc and fixed atoms (not the labels)."""
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.set_constraint([c.copy() for c in atoms.constraints if isinstance(c, FixAtoms)])
    return out


def evaluate_training_set(engine, model, training_set: Sequence, chunk: int = 100) -> dict | None:
    """The parity plot's data (the `parity_data` of `write_report`): `evaluate` tasks of the model on the
    labelled structures, `chunk` structures per task, submitted together; None when nothing is fitted."""
    structures = fitted_configurations(training_set)
    if not structures:
        return None
    futures = [engine.submit(EvaluateSpec(model=model), [_configuration(a) for a in structures[i:i + chunk]])
               for i in range(0, len(structures), chunk)]
    energies, forces = [], []
    for fut in futures:
        result = fut.result()
        energies += result.energies_eV
        forces += result.forces_eV_per_A
    return parity_rows(structures, energies, forces)


# ----------------------------------------------------------------------------------------------
# index.html
# ----------------------------------------------------------------------------------------------


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<div class='wide'><table><tr>{head}</tr>{body}</table></div>"


def _block_rows(blocks) -> list[dict]:
    if isinstance(blocks, Mapping):
        return [{"block": k, **v} for k, v in blocks.items()]
    return list(blocks or [])


def write_report(
    out,
    summary: Mapping,
    growth: Sequence[Mapping] | None = None,
    sigma_traces: Sequence[Mapping] | None = None,
    barrier_iterations: Mapping[str, Sequence[Mapping]] | None = None,
    profiles: Mapping[str, Mapping] | None = None,
    parity_data: Mapping | None = None,
    *,
    training_set: Sequence | None = None,
    neb_history: Sequence[Mapping] | None = None,
    paths: Mapping | None = None,
) -> Path:
    """Write every figure there is data for and `index.html`; returns the page's path.

    out: the run's Store (the files go to its report/ folder) or a folder.
    summary: summary.json content; its `blocks` (list of dicts, or dict keyed by block, with
      iterations, labels_added, reference_calls, termination_met, criterion_value, and optionally
      breach_trace) and `barriers` (list of {reaction, permutations_screened, mlff_barrier_eV,
      reference_barrier_eV, abs_error_eV}) become tables; other scalar keys a key/value table.
    growth: rows for `training_growth`.
    sigma_traces: dicts with the keyword arguments of `sigma_trace` (steps, sigma_eV and optional
      sigma_thr_eV, timestep_fs, symbols, highlight, title).
    barrier_iterations: the `history` of `barrier_history`.
    profiles: the `profiles` of `energy_profile`.
    parity_data: keyword arguments of `parity` (reference/mlff energies per atom and forces), as
      `evaluate_training_set(engine, model, training_set)` returns them.

    Run objects, used for whatever of the above is not given explicitly:
    training_set: labelled ase.Atoms (info block, iteration, reason, REF_energy; arrays REF_forces)
      -> growth;
    summary["blocks"][*]["breach_trace"] ({steps, sigma_eV, symbols, sigma_thr_eV, iteration}) -> σ traces;
    neb_history: per block-6 iteration {"iteration": i, <reaction>: {mlff_barrier_eV,
      reference_barrier_eV, mlff_energies_eV, reference_energies_eV}} -> barrier history and, from the
      last iteration of each reaction, the energy profile; `paths` ({reaction: {"energies_eV"}}) gives
      the MLFF profile of reactions missing there."""
    if growth is None and training_set:
        growth = growth_rows(training_set)
    if sigma_traces is None:
        sigma_traces = breach_traces(summary)
    if barrier_iterations is None and neb_history:
        barrier_iterations = barrier_rows(neb_history)
    if profiles is None and (neb_history or paths):
        profiles = profile_rows(neb_history or [], paths or {}, summary.get("validation"))
    outdir = Path(getattr(out, "report_dir", out))
    figures: list[tuple[str, str]] = []
    if growth:
        figures.append((training_growth(growth, outdir / "training_growth.png").name, "Training-set growth per block"))
    for k, tr in enumerate(sigma_traces or []):
        name = f"sigma_trace_{k}.png"
        sigma_trace(path=outdir / name, **tr)
        figures.append((name, tr.get("title") or "Per-atom σ during MD"))
    if barrier_iterations:
        final = {b["reaction"]: b.get("reference_barrier_eV") for b in summary.get("barriers") or []
                 if b.get("validation_converged") is not False}
        figures.append((barrier_history(barrier_iterations, outdir / "barrier_history.png", final).name,
                        "Barrier vs NEB iteration (band: ± 50 meV of the reference barrier)"))
    if profiles:
        figures.append((energy_profile(profiles, outdir / "energy_profile.png").name, "Reaction energy profile"))
    if parity_data:
        figures.append((parity(path=outdir / "parity.png", **parity_data).name, "Energy and force parity"))
    ads = summary.get("adsorption") or {}
    if ads.get("profile"):
        figures.append((mechanism_profile(ads["profile"], outdir / "energy_profile_mechanism.png").name,
                        "The mechanism on one energy axis: adsorption energies and transition states"))
    if ads.get("iterations"):
        figures.append((adsorption_error(ads["iterations"], outdir / "adsorption_error.png").name,
                        "Adsorption energy error per iteration"))

    blocks = _block_rows(summary.get("blocks"))
    barriers = list(summary.get("barriers") or [])
    scalars = {k: v for k, v in summary.items() if isinstance(v, (str, int, float, bool)) or v is None}
    title = str(summary.get("name") or summary.get("protocol") or "Catalysis run")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px}"
        "img{max-width:100%}.wide{overflow-x:auto}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if scalars:
        parts.append("<h2>Summary</h2>" + _table([{"key": k, "value": v} for k, v in scalars.items()], ["key", "value"]))
    if blocks:
        cols = ["block", "name", "iterations", "labels_added", "reference_calls", "termination_met", "criterion_value"]
        parts.append("<h2>Active-learning blocks</h2>" + _table(blocks, cols))
    if barriers:
        cols = ["reaction", "permutations_screened", "mlff_barrier_eV", "reference_barrier_eV", "abs_error_eV",
                "abs_error_vs_unconverged_eV", "validation_converged", "validation_steps", "validation_step0_fmax_eV_per_A"]
        parts.append("<h2>Barriers</h2>" + _table(barriers, cols))
    if neb_rows := block6_rows(neb_history or []):
        cols = ["iteration", "reaction", "mlff_barrier_eV", "max_abs_energy_error_eV",
                "reference_perpendicular_fmax_eV_per_A"]
        parts.append("<h2>Block 6 per iteration: energy error and reference force across the band</h2>"
                     + _table(neb_rows, cols))
    if ads.get("final"):
        rows = [{"intermediate": n, **r} for n, r in ads["final"].items()]
        mu = ", ".join(f"μ_{el} = {v:.4f} eV" for el, v in (ads.get("chemical_potentials_eV") or {}).items())
        parts.append(f"<h2>Adsorption energies (last iteration)</h2><p>Gas references "
                     f"{html.escape(', '.join(ads.get('gas_references') or {}))}: {html.escape(mu)} (reference)</p>"
                     + _table(rows, ["intermediate", "mlff_eV", "reference_eV", "error_eV"]))
        its = [{"iteration": _iteration_label(r), "block": r.get("block"), "mae_eV": r.get("mae_eV")}
               for r in ads.get("iterations") or []]
        parts.append("<h2>Adsorption energy mean absolute error per iteration</h2>"
                     + _table(its, ["iteration", "block", "mae_eV"]))
    for name, caption in figures:
        parts.append(f"<figure><a href='{name}'><img src='{name}' alt='{html.escape(caption)}'></a>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return atomic_write_text(outdir / "index.html", "\n".join(parts))
