"""The command line: `reactforge` (installed) and `python run.py` (a checkout) are the same.

    reactforge run --site archer2 protocol.yaml     run a protocol on a site; the same command resumes it
    reactforge check --site archer2 protocol.yaml   validate, print the plan and what the site would start;
                                                    write what it built to RUN_DIR/preview (--no-preview: not)
    reactforge report runs/NAME                     rewrite a catalysis run's report/ from its files
    reactforge examples [DEST]                      list the shipped example protocols, or copy them to DEST
    reactforge export-schema [DIR]                  write the JSON Schemas of protocol and site files

Without a command, `reactforge [--check] [options] protocol.yaml` runs (or checks) as `python run.py`
always has. A protocol is a YAML path or the name of a shipped example (`quickstart`); a site is a
name in site-configs/ or a YAML path. Bad input exits with status 2 and a message naming the file and
the field.
"""
from __future__ import annotations

import argparse
import difflib
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from reactforge.engine.lock import RunDirLocked, RunLock
from reactforge.schemas.loading import InputError, read_yaml, validate
from reactforge.schemas.site import SiteConfig

# the package's folder: site-configs/ and examples/ are shipped inside it
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
COMMANDS = ("run", "check", "report", "examples", "export-schema")


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


def protocol_path(arg: str) -> Path:
    """A YAML path as given; a bare name that is no file is a shipped example (`quickstart`)."""
    path = Path(arg)
    if path.exists() or path.suffix:
        return path
    if (EXAMPLES / f"{arg}.yaml").is_file() and path.name == arg:
        return EXAMPLES / f"{arg}.yaml"
    known = sorted(p.stem for p in EXAMPLES.glob("*.yaml"))
    raise InputError(arg, [f"no such file, nor a shipped example; examples: {', '.join(known)}"])


def load_protocol(path: Path):
    from reactforge.engine.registry import DEFAULT, WORKFLOWS, protocol_class
    from reactforge.schemas.loading import load_protocol as load

    def schema(data: dict):
        workflow = data.get("workflow", DEFAULT)
        if not isinstance(workflow, str) or workflow not in WORKFLOWS:
            close = difflib.get_close_matches(workflow, list(WORKFLOWS)) if isinstance(workflow, str) else []
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            raise InputError(path, [f"field 'workflow': unknown workflow {workflow!r}{hint}; known: {sorted(WORKFLOWS)}"])
        return protocol_class(workflow)

    protocol = load(path, schema)
    return protocol.workflow, protocol


def _prepare(args):
    """Site, protocol and the workflow's plan; the plan builds what the protocol names (structures,
    files), so bad input stops here, before anything is written."""
    from reactforge.engine.registry import workflow_module

    site_path, site = load_site(args.site)
    path = protocol_path(args.protocol)
    workflow, protocol = load_protocol(path)
    module = workflow_module(workflow)
    try:
        steps = module.plan(protocol)
    except (ValueError, OSError) as err:
        raise InputError(path, [str(err)]) from None
    return site_path, site, path, workflow, protocol, module, steps


def check(args) -> int:
    from reactforge.engine.parsl_config import describe, render_submit_script

    site_path, site, path, workflow, protocol, _, steps = _prepare(args)
    run_dir = args.run_dir or Path("runs") / protocol.name
    print(f"protocol {path} (workflow {workflow}) is valid; run directory {run_dir}")
    print("plan:")
    for line in steps:
        print(f"  {line}")
    print(f"site {site.name} ({site_path}) would start:")
    for line in describe(site):
        print(f"  {line}")
    # the whole script, not only its #SBATCH lines: worker_init and the launcher are commands of the job too
    with tempfile.TemporaryDirectory() as tmp:
        for label, cfg in site.executors.items():
            if cfg.provider.type == "slurm":
                script = render_submit_script(site, label, Path(tmp)).replace(tmp, "<submit_scripts>")
                print(f"  {label} submit script (one per block):")
                print("\n".join(f"    {ln}".rstrip() for ln in script.strip("\n").splitlines()))
    if getattr(args, "preview", True):
        folder = args.preview_dir or run_dir / "preview"
        if files := _write_preview(protocol, folder, path):
            print(f"preview (structures as built, before any reference call) in {folder}:")
            print("\n".join(f"  {f.relative_to(folder)}" for f in files))
    return 0


def _write_preview(protocol, folder: Path, protocol_file: Path) -> list[Path]:
    """workflows/preview.py's files, written into a staging folder beside `folder` and swapped in whole:
    a structure that fails to build leaves nothing, and files of an earlier preview (a renamed
    intermediate's) do not linger. An existing folder is replaced only if it is a preview."""
    from reactforge.workflows.preview import write_preview

    if folder.exists() and not (folder / "overview.png").is_file():
        raise InputError(folder, ["exists and holds no preview (no overview.png); choose another --preview DIR"])
    staging = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    made = [d for d in (folder.parent, *folder.parent.parents) if not d.exists()]  # the run directory, say
    try:
        files = write_preview(protocol, staging)
        if files:
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            if folder.exists():
                folder.rename(old)
            staging.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
    except (ValueError, OSError) as err:
        shutil.rmtree(staging, ignore_errors=True)
        for d in made:  # deepest first: folders this check made stay only with a preview in them
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise InputError(protocol_file, [f"preview: {err}"]) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [folder / f.relative_to(staging) for f in files]


def run(args) -> int:
    if args.check:
        return check(args)
    _, site, path, workflow, protocol, module, _ = _prepare(args)

    from reactforge.engine.engine import Engine, EngineStopped, TaskFailed
    from reactforge.engine.progress import Progress
    from reactforge.engine.store import ProtocolMismatch, Store

    run_dir = args.run_dir or Path("runs") / protocol.name
    lock = RunLock(run_dir)
    if run_dir.is_dir():  # before claim, which may move a run aside: never from under a live coordinator
        Store.check_readable(run_dir)  # before the lock file too: a run that cannot resume is left as it was
        lock.acquire()
    try:
        state = Store.claim(run_dir, path.read_text(), force_new=args.force_new, source_dir=path.parent)
    except ProtocolMismatch as err:
        lock.release()
        print(f"error: {err}", file=sys.stderr)
        return 2
    if state.startswith("archived"):  # the lock we held went aside with the old run
        lock.release()
        lock = RunLock(run_dir)
    if not lock.held:
        lock.acquire()
    log_path = run_dir / "run.log"  # everything below that is printed also goes there

    def say(message: str, err: bool = False, echo: bool = True) -> None:
        if echo:
            print(message, file=sys.stderr if err else sys.stdout, flush=True)
        try:
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}\n")
        except OSError:
            pass  # the message is on the terminal; a full disk is the journal's to report

    say(f"run directory {run_dir}: {'resuming' if state == 'resume' else state}")
    store = Store(run_dir)
    start = time.time()
    # status: running until the workflow returns (completed) or stops (failed); a coordinator killed
    # outright leaves `running`, and the same command resumes it
    store.update_summary(protocol=protocol.name, workflow=workflow, site=site.name, status="running", reason=None)
    with lock, Engine(site, run_dir) as engine:
        with Progress(engine, f"{protocol.name} on {site.name}", live=False if args.no_live else None,
                      log_path=log_path) as progress:
            try:
                results = module.run(protocol, engine, store, progress)
            except (EngineStopped, TaskFailed) as err:
                # a block that cannot go on without this task, or an engine that cannot record: the journal
                # keeps every finished task, so the same command resumes from here
                store.update_summary(status="failed", reason=str(err), wall_s=round(time.time() - start, 1))
                say(f"error: run stopped: {err}\nfinished tasks are kept in {run_dir / 'journal.db'}; "
                    "the same command resumes the run", err=True)
                return 1
            except KeyboardInterrupt:  # Ctrl-C: a user's stop, not a bug
                store.update_summary(status="failed", reason="interrupted (Ctrl-C)",
                                     wall_s=round(time.time() - start, 1))
                say(f"interrupted: finished tasks are kept in {run_dir / 'journal.db'}; "
                    "the same command resumes the run", err=True)
                return 130
            except BaseException as err:  # a bug: the traceback still shows, the summary says so
                store.update_summary(status="failed", reason=f"{type(err).__name__}: {err}",
                                     wall_s=round(time.time() - start, 1))
                say(f"run stopped: {type(err).__name__}: {err}\n{traceback.format_exc()}".rstrip(), echo=False)
                raise
        summary = store.update_summary(
            wall_s=round(time.time() - start, 1),
            reference_calls=engine.reference_calls, tasks=engine.journal.counts(), executors=engine.stats(),
            failures=engine.journal.failures(), status="completed", reason=None, **results,
        )
    say(f"done in {summary['wall_s']} s; summary: {run_dir / 'summary.json'}")
    return 0


def report(args) -> int:
    """report/ of a catalysis run, rebuilt from what the run keeps on disk: summary.json (blocks.json
    while a run is unfinished), labels.db and paths/. The parity figure's numbers are `evaluate` tasks
    of the final model through an engine on the run directory: those the run finished come from its
    journal, the rest run on --site. --no-parity leaves the figure out."""
    from ase.io import read

    from reactforge.engine.engine import Engine, TaskFailed
    from reactforge.engine.registry import DEFAULT
    from reactforge.engine.store import Store
    from reactforge.schemas.protocol import BLOCK_NAMES
    from reactforge.schemas.tasks import ModelRef
    from reactforge.workflows.report import evaluate_training_set, write_report

    run_dir = args.run_dir
    if not (run_dir / "protocol.sha256").is_file():
        raise InputError(run_dir, ["not a run directory (no protocol.sha256)"])
    _, site = load_site(args.site)
    store = Store(run_dir)
    summary = store.read_json("summary.json") or {}
    workflow = summary.get("workflow") or read_yaml(run_dir / "protocol.yaml").get("workflow", DEFAULT)
    if workflow != "catalysis":
        raise InputError(run_dir, [f"a {workflow} run has no report/ to rewrite (catalysis runs write one)"])
    blocks = summary.get("blocks") or store.read_json("blocks.json") or {}
    summary = {**summary, "blocks": blocks}
    # block 6's history keeps each iteration's barriers row: the run's neb_history
    neb = blocks.get(BLOCK_NAMES[6]) or {}
    neb_history = [{"iteration": h["iteration"], **h["barriers"]} for h in neb.get("history", []) if "barriers" in h]
    paths = {p.name[:-len(".xyz")]: {"energies_eV": [a.info.get("energy_mlff_eV") for a in read(p, ":")]}
             for p in sorted(run_dir.glob("paths/*.xyz")) if not p.name.endswith(".validation.xyz")}
    training_set = store.training_set()
    parity_data = None
    if args.parity and summary.get("model"):
        model = ModelRef.model_validate(summary["model"])
        # the run wrote models/<name>/<file> under the run directory as it was spelled then; a moved run
        # directory still has them (the model's identity is its sha256, not its paths)
        kept = [Path(p) if Path(p).exists() else run_dir / "models" / Path(p).parent.name / Path(p).name
                for p in model.paths]
        if all(p.exists() for p in kept):
            model = model.model_copy(update={"paths": [str(p) for p in kept]})
            try:
                with Engine(site, run_dir) as engine:
                    parity_data = evaluate_training_set(engine, model, training_set)
            except TaskFailed as err:
                print(f"note: no parity figure: {err}", file=sys.stderr)
        else:
            print(f"note: no parity figure: the final model's files are not in {run_dir / 'models'}", file=sys.stderr)
    page = write_report(store, summary=summary, training_set=training_set, neb_history=neb_history,
                        paths=paths, parity_data=parity_data)
    print(page)
    return 0


def examples(args) -> int:
    """Without DEST, the shipped examples and their first comment line; with DEST, copies of them (and
    their structures/) to edit: an existing file there is never overwritten."""
    if args.dest is None:
        for p in sorted(EXAMPLES.glob("*.yaml")):
            first = next((ln.lstrip("# ").strip() for ln in p.read_text().splitlines() if ln.startswith("#")), "")
            print(f"{p.stem:28s} {first}")
        print(f"(in {EXAMPLES}; `reactforge check NAME` takes a name, `reactforge examples DEST` copies them)")
        return 0
    files = [p for p in sorted(EXAMPLES.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    clashes = [args.dest / p.relative_to(EXAMPLES) for p in files if (args.dest / p.relative_to(EXAMPLES)).exists()]
    if clashes:
        raise InputError(args.dest, [f"{c} exists; choose another folder" for c in clashes[:3]])
    for p in files:
        target = args.dest / p.relative_to(EXAMPLES)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
    print(f"{len(files)} files in {args.dest}; e.g. reactforge check --site local-htex {args.dest / 'quickstart.yaml'}")
    return 0


def export_schema(args) -> int:
    from reactforge.schemas.export import main as export

    if args.dir is None:
        export()  # the package's schemas/json/: in a checkout, the committed files
    else:
        args.dir.mkdir(parents=True, exist_ok=True)
        export(args.dir)
    return 0


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("reactforge")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="reactforge", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"reactforge {_version()}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    def with_protocol(p, check_flag: bool):
        p.add_argument("protocol", help="protocol YAML, or the name of a shipped example (see `examples`)")
        p.add_argument("--site", default="local", help="a name in site-configs/ or a path to a site YAML (default local)")
        p.add_argument("--run-dir", type=Path, help="run directory (default runs/<protocol name>)")
        p.add_argument("--preview", dest="preview_dir", type=Path, metavar="DIR",
                       help="check: where the preview goes (default RUN_DIR/preview)")
        p.add_argument("--no-preview", dest="preview", action="store_false", help="check: write no preview")
        if check_flag:
            p.add_argument("--check", action="store_true", help="the same as `reactforge check`: run nothing")
            p.add_argument("--force-new", action="store_true", help="move an existing run of another protocol aside")
            p.add_argument("--no-live", action="store_true", help="plain log lines instead of the live table")

    p = sub.add_parser("run", help="run a protocol (the same command resumes it)")
    with_protocol(p, check_flag=True)
    p.set_defaults(func=run)
    p = sub.add_parser("check", help="validate, print the plan and the executors (and SLURM lines), write a "
                                    "preview of the structures; run nothing")
    with_protocol(p, check_flag=False)
    p.set_defaults(func=check)
    p = sub.add_parser("report", help="rewrite a catalysis run's report/ (figures, index.html) from its files")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--site", default="local", help="where evaluations the run's journal lacks run (default local)")
    p.add_argument("--no-parity", dest="parity", action="store_false",
                   help="leave out the parity figure (the final model evaluated on every label)")
    p.set_defaults(func=report)
    p = sub.add_parser("examples", help="list the shipped example protocols, or copy them to DEST")
    p.add_argument("dest", type=Path, nargs="?", metavar="DEST")
    p.set_defaults(func=examples)
    p = sub.add_parser("export-schema", help="write the JSON Schemas of protocol and site files")
    p.add_argument("dir", type=Path, nargs="?", metavar="DIR", help="default: the package's schemas/json/")
    p.set_defaults(func=export_schema)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = _parser()
    if not argv:
        ap.print_help(sys.stderr)
        return 2
    if argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv = ["run", *argv]  # no command: `reactforge [--check] [options] protocol.yaml`, as run.py always took
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except (InputError, RunDirLocked) as err:  # bad input, or a run directory another coordinator holds
        print(f"error: {err}", file=sys.stderr)
        return 2
