"""The command line: run an active-learning protocol on a site (`reactforge` and `python run.py`).

    reactforge --site archer2 protocol.yaml
    reactforge --site local examples/quickstart.yaml --check

Re-running the same command on an existing run directory resumes it: finished tasks come from the
journal. Bad input exits with status 2 and a message naming the file and the field.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from reactforge.schemas.loading import InputError, read_yaml, validate
from reactforge.schemas.site import SiteConfig

# the package's folder: site-configs/ and examples/ are shipped inside it
ROOT = Path(__file__).resolve().parents[1]


def load_site(name_or_path: str) -> tuple[Path, SiteConfig]:
    path = Path(name_or_path)
    if not path.suffix:
        path = ROOT / "site-configs" / f"{name_or_path}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in (ROOT / "site-configs").glob("*.yaml"))
            raise InputError(name_or_path, [f"no such site; known sites: {', '.join(known)} (or give a YAML path)"])
    data = read_yaml(path, expand_env=True)
    data.setdefault("name", path.stem)
    return path, validate(path, data, SiteConfig)


def load_protocol(path: Path):
    from reactforge.engine.registry import DEFAULT, WORKFLOWS, protocol_class

    data = read_yaml(path)
    workflow = data.get("workflow", DEFAULT)
    if workflow not in WORKFLOWS:
        raise InputError(path, [f"field 'workflow': unknown workflow {workflow!r}; known: {sorted(WORKFLOWS)}"])
    protocol = validate(path, data, protocol_class(workflow))
    if hasattr(protocol, "_base_dir"):  # relative structure files resolve against the protocol's folder
        protocol._base_dir = path.resolve().parent
    return workflow, protocol


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("protocol", type=Path, help="protocol YAML")
    ap.add_argument("--site", default="local", help="a name in site-configs/ or a path to a site YAML")
    ap.add_argument("--run-dir", type=Path, help="run directory (default runs/<protocol name>)")
    ap.add_argument("--check", action="store_true", help="validate, print the plan and executors, run nothing")
    ap.add_argument("--resume", action="store_true", help="(default behaviour) continue an existing run")
    ap.add_argument("--force-new", action="store_true", help="move an existing run of another protocol aside")
    ap.add_argument("--no-live", action="store_true", help="plain log lines instead of the live table")
    args = ap.parse_args(argv)

    try:
        site_path, site = load_site(args.site)
        workflow, protocol = load_protocol(args.protocol)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from reactforge.engine.parsl_config import describe, render_submit_script
    from reactforge.engine.registry import workflow_module

    module = workflow_module(workflow)
    run_dir = args.run_dir or Path("runs") / protocol.name
    try:  # builds what the protocol names (structures, files): bad input stops here, before any write
        steps = module.plan(protocol)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:
        print(f"error: {args.protocol}: {err}", file=sys.stderr)
        return 2
    if args.check:
        print(f"protocol {args.protocol} (workflow {workflow}) is valid; run directory {run_dir}")
        print("plan:")
        for line in steps:
            print(f"  {line}")
        print(f"site {site.name} ({site_path}) would start:")
        for line in describe(site):
            print(f"  {line}")
        with tempfile.TemporaryDirectory() as tmp:
            for label, cfg in site.executors.items():
                if cfg.provider.type == "slurm":
                    script = render_submit_script(site, label, Path(tmp))
                    sbatch = [ln for ln in script.splitlines() if ln.startswith("#SBATCH") and "--output" not in ln
                              and "--error" not in ln and "--job-name" not in ln]
                    print(f"  {label} submit script: {' '.join(ln[8:] for ln in sbatch)}")
        return 0

    from reactforge.engine.engine import Engine
    from reactforge.engine.progress import Progress
    from reactforge.engine.store import ProtocolMismatch, Store

    try:
        state = Store.claim(run_dir, args.protocol.read_text(), force_new=args.force_new)
    except ProtocolMismatch as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run directory {run_dir}: {'resuming' if state == 'resume' else state}", flush=True)
    store = Store(run_dir)
    store.protocol_dir = args.protocol.resolve().parent
    start = time.time()
    with Engine(site, run_dir) as engine:
        with Progress(engine, f"{protocol.name} on {site.name}", live=False if args.no_live else None) as progress:
            try:
                results = module.run(protocol, engine, store, progress)
            except InputError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
        summary = store.update_summary(
            protocol=protocol.name, workflow=workflow, site=site.name, wall_s=round(time.time() - start, 1),
            reference_calls=engine.reference_calls, tasks=engine.journal.counts(), executors=engine.stats(),
            failures=engine.journal.failures(), **results,
        )
    print(f"done in {summary['wall_s']} s; summary: {run_dir / 'summary.json'}")
    return 0
