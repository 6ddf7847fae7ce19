"""Validation NEBs that stopped at their step budget, continued to convergence: a converged reference
barrier for a reaction whose direct NEB from IDPP cannot be run (GFN2-xTB's SCF fails on the quickstart's
interpolated H2-migration bands even with the smeared rescue).

    python benchmarks/validation_continued.py --run-dir DIR
        ->  benchmarks/results/validation_continued_seedN.json

For each reaction of the finished run DIR whose validation did not converge, a reference NEB with the
protocol's band settings starts from the validation's last band (paths/<reaction>.validation.xyz) and
relaxes to the validation's fmax (at most 400 steps). Journaled in DIR/validation-continued.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ase.io import read

from reactforge.engine.engine import Engine, TaskFailed
from reactforge.schemas.protocol import load_protocol

from reference_calls import ROOT, local_site, reference_band_spec

MAX_STEPS = 400


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, required=True)
    args = ap.parse_args()
    run_dir = args.run_dir.resolve()
    summary = json.loads((run_dir / "summary.json").read_text())
    protocol = load_protocol(run_dir / "protocol.yaml")
    # the validation's own band settings: block 6's, always with a climbing image
    # (workflows/catalysis.py, Catalysis.validate)
    spec = reference_band_spec(protocol, MAX_STEPS).model_copy(update={"climb": True})
    todo = [b for b in summary["barriers"] if b.get("validation_converged") is False]
    rows = []
    with Engine(local_site(), run_dir / "validation-continued") as engine:
        futures = [(b, engine.submit(spec, read(run_dir / "paths" / f"{b['reaction']}.validation.xyz", ":")))
                   for b in todo]
        for b, f in futures:
            row = {"reaction": b["reaction"], "mlff_barrier_eV": b["mlff_barrier_eV"],
                   "unconverged_validation_barrier_eV": b["reference_barrier_eV"],
                   "validation_steps": b.get("validation_steps")}
            try:
                res = f.result()
            except TaskFailed as exc:
                rows.append({**row, "error": str(exc)})
                continue
            rows.append({**row, "fmax_start_eV_per_A": res.fmax_initial_eV_per_A, "further_steps": res.steps,
                         "converged": res.converged, "reference_barrier_eV": res.forward_barrier_eV,
                         "abs_error_eV": abs(b["mlff_barrier_eV"] - res.forward_barrier_eV) if res.converged else None,
                         "reference_calls": res.energy_evaluations})
    out = {"command": "python benchmarks/validation_continued.py", "run_dir": str(run_dir), "seed": protocol.seed,
           "max_steps": MAX_STEPS, "reactions": rows}
    dest = ROOT / "benchmarks" / "results" / f"validation_continued_seed{protocol.seed}.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
