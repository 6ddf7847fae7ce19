"""Bad and hostile input through the real command line: exit 2, a message naming the file and the field, no
traceback, and nothing created or modified (path traversal by names, unreadable structure references,
non-finite or mistyped numbers, duplicate keys, alias bombs, deep nesting, bad run directories)."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reactforge.engine.store import OutsideRunDir, Store

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _catalysis(change):
    """The quickstart protocol with `change(data)` applied."""
    def build(tmp: Path) -> Path:
        data = yaml.safe_load((EXAMPLES / "quickstart.yaml").read_text())
        change(data)
        (tmp / "protocol.yaml").write_text(yaml.safe_dump(data))
        return tmp / "protocol.yaml"
    return build


def _tasks(change):
    """The singlepoints protocol (its structures copied beside it) with `change(data, folder)` applied."""
    def build(tmp: Path) -> Path:
        shutil.copytree(EXAMPLES / "structures", tmp / "structures")
        data = yaml.safe_load((EXAMPLES / "singlepoints.yaml").read_text())
        change(data, tmp)
        (tmp / "protocol.yaml").write_text(yaml.safe_dump(data))
        return tmp / "protocol.yaml"
    return build


def _text(text: str | bytes):
    def build(tmp: Path) -> Path:
        path = tmp / "protocol.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path
    return build


def _set(*keys, value):
    """change(data) that sets data[k1][k2]... = value."""
    def change(data, *_):
        for k in keys[:-1]:
            data = data[k]
        data[keys[-1]] = value
    return change


def _structure(ref: str, write: dict[str, str] | None = None):
    """change(data, folder) making the first job read `ref`, after writing the files in `write`."""
    def change(data, tmp):
        for name, text in (write or {}).items():
            (tmp / name).write_text(text)
        data["jobs"][0]["structures"] = [ref]
    return change


def _fragment(**fragment):
    def change(data):
        data["intermediates"]["H2@vacancy"]["fragments"] = [fragment]
    return change


def _bomb(levels: int = 9) -> str:
    """Each level aliases the previous one ten times: 10^levels leaves once expanded, in a few hundred bytes."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "workflow: tasks\nname: bomb\n" + "\n".join(lines) + "\n"


SINGLEPOINTS = (EXAMPLES / "singlepoints.yaml").read_text()

# id -> (protocol builder, what stderr must also name: the field, or what is wrong where no field applies)
CASES = {
    # 6. names become file names: runs/<name>, paths/<reaction>.xyz, results/<job>.json
    "name-traversal": (_catalysis(_set("name", value="../../x")), "field 'name'"),
    "name-absolute": (_catalysis(_set("name", value="/tmp/x")), "field 'name'"),
    "name-nul": (_catalysis(_set("name", value="a\0b")), "field 'name'"),
    "name-dotdot": (_tasks(_set("name", value="..")), "field 'name'"),
    "reaction-traversal": (_catalysis(lambda d: d["reactions"][0].update(name="../../../x")), "field 'reactions.0.name'"),
    "job-traversal": (_tasks(lambda d, _: d["jobs"][0].update(name="../../x")), "field 'jobs.0.name'"),
    # 7. structure references and files
    "frame-out-of-range": (_tasks(_structure("structures/h2o.xyz@99")), "field 'jobs.0.structures.0'"),
    "frame-not-integer": (_tasks(_structure("structures/h2o.xyz@abc")), "field 'jobs.0.structures.0'"),
    "frame-negative-beyond": (_tasks(_structure("structures/h2o.xyz@-5")), "field 'jobs.0.structures.0'"),
    "not-a-structure": (_tasks(_structure("notes.xyz", {"notes.xyz": "not a structure\n"})),
                        "field 'jobs.0.structures.0'"),
    "unknown-file-type": (_tasks(_structure("notes.yaml", {"notes.yaml": "a: 1\n"})), "field 'jobs.0.structures.0'"),
    "bulk-not-a-structure": (_catalysis(_set("bulk", value={"file": "protocol.yaml"})), "field 'bulk.file'"),
    "unknown-molecule": (_catalysis(_fragment(molecule="Unobtainium")),
                         "field 'intermediates.H2@vacancy.fragments.0'"),
    "unknown-element": (_catalysis(_fragment(symbols="XxH", positions_A=[[0, 0, 2], [0, 0, 3]])),
                        "field 'intermediates.H2@vacancy.fragments.0'"),
    "lattice-inf": (_catalysis(_set("bulk", "a_A", value=float("inf"))), "field 'bulk.a_A'"),
    "lattice-1e300": (_catalysis(_set("bulk", "a_A", value=1e300)), "field 'bulk'"),
    "workflow-list": (_catalysis(_set("workflow", value=["x"])), "field 'workflow'"),
    # 11. numbers: finite, no bool for a number, no float for a count
    "sigma-thr-inf": (_catalysis(_set("sigma_thr_eV", value=float("inf"))), "field 'sigma_thr_eV'"),
    "temperature-inf": (_catalysis(_set("parameters", "b1_bulk", "temperature_K", value=float("inf"))),
                        "field 'parameters.b1_bulk.temperature_K'"),
    "max-force-inf": (_tasks(lambda d, _: d["jobs"][0]["spec"].update(max_force_eV_per_A=float("inf"))),
                      "max_force_eV_per_A"),
    "positions-nan": (_catalysis(_fragment(symbols="HH", positions_A=[[0, 0, float("nan")], [0, 0, 3]])),
                      "field 'intermediates.H2@vacancy.fragments.0.positions_A.0.2'"),
    "count-bool": (_catalysis(_set("parameters", "b0_initial", "n_rattled", value=True)),
                   "field 'parameters.b0_initial.n_rattled'"),
    "count-float": (_catalysis(_set("parameters", "b0_initial", "n_rattled", value=10.0)),
                    "field 'parameters.b0_initial.n_rattled'"),
    # 10. duplicates
    "duplicate-key": (_text(SINGLEPOINTS.replace("name: singlepoints", "name: singlepoints\nname: other")),
                      "field 'name' given twice"),
    "duplicate-job-name": (_tasks(lambda d, _: d["jobs"][1].update(name=d["jobs"][0]["name"])), "field 'jobs'"),
    # 5. (issue 19): a misspelt field names the close allowed ones, also inside a tagged union
    "misspelt-field": (_catalysis(lambda d: d["surface"].update(milers=d["surface"].pop("miller"))),
                       "field 'surface.milers': Extra inputs are not permitted (did you mean 'miller'?)"),
    "misspelt-nested-field": (_tasks(lambda d, _: d["jobs"][0]["spec"]["reference"].update(
        methd=d["jobs"][0]["spec"]["reference"].pop("method"))), "methd': Extra inputs are not permitted (did you mean 'method'?)"),
    "misspelt-workflow": (_text(SINGLEPOINTS.replace("workflow: tasks", "workflow: task")), "(did you mean 'tasks'?)"),
    # 12. and 7.: what would exhaust time, memory or the stack
    "alias-bomb": (_text(_bomb()), "aliases expanded"),
    "recursive-alias": (_text("workflow: tasks\nname: x\njobs: &a [*a]\n"), "refers to a node that contains it"),
    "deep-nesting": (_text("workflow: tasks\nname: x\njobs: " + "[" * 20000 + "]" * 20000 + "\n"), "deeper than"),
    "huge-file": (_text("workflow: tasks\nname: x\n" + "# padding\n" * 300_000), "larger than"),
    "not-utf8": (_text(b"workflow: tasks\nname: caf\xe9\n"), "not UTF-8"),
}


def cli(*args, cwd: Path):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def snapshot(folder: Path, ignore: tuple[str, ...] = ()) -> dict[str, bytes | None]:
    """Every file and folder under `folder`, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*")) if p.name not in ignore}


def _run_and_check(tmp_path: Path, protocol: Path, names: list[str], ignore: tuple[str, ...] = ()):
    work = tmp_path / "work"  # the current folder: a default runs/<name> would land in it
    work.mkdir()
    before = snapshot(tmp_path)
    p = cli("--site", "local", "--run-dir", tmp_path / "run", "--no-live", protocol, cwd=work)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    for name in names:
        assert name in p.stderr, p.stderr
    after = snapshot(tmp_path)
    for name in ignore:  # files a coordinator may add, named by the caller
        after = {k: v for k, v in after.items() if Path(k).name != name or k in before}
    assert after == before, "the command created or changed files"
    return p


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(CASES))
def test_bad_protocol_is_exit_2_naming_file_and_field_and_writes_nothing(tmp_path, case):
    build, what = CASES[case]
    protocol = build(tmp_path)
    _run_and_check(tmp_path, protocol, [str(protocol), what])


def _claimed_run_dir(tmp_path: Path, protocol: Path) -> Path:
    """A run directory that belongs to `protocol`, as Store.claim leaves it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    text = protocol.read_text()
    (run_dir / "protocol.yaml").write_text(text)
    (run_dir / "protocol.sha256").write_text(hashlib.sha256(text.encode()).hexdigest() + "\n")
    return run_dir


def _occupy(tmp_path: Path, protocol: Path, occupant: str) -> tuple[list[str], tuple[str, ...]]:
    """A run directory that cannot be used; returns what the message must name and files a refusal may add."""
    run_dir = tmp_path / "run"
    if occupant == "file":
        run_dir.write_text("mine")
        return [str(run_dir)], ()
    if occupant == "folder-without-run":  # 8.: refused by Store.claim, after the coordinator took its lock file
        run_dir.mkdir()
        (run_dir / "precious.txt").write_text("mine")
        return [str(run_dir), "protocol.sha256"], ("coordinator.lock",)
    run_dir = _claimed_run_dir(tmp_path, protocol)
    if occupant == "corrupt-journal":
        (run_dir / "journal.db").write_bytes(b"not a database\n" * 100)
        return [str(run_dir / "journal.db")], ()
    if occupant == "corrupt-labels":
        (run_dir / "labels.db").write_bytes(b"\0" * 4096)
        return [str(run_dir / "labels.db")], ()
    (run_dir / "summary.json").write_text("{half a summ")
    return [str(run_dir / "summary.json")], ()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("occupant", ["file", "folder-without-run", "corrupt-journal", "corrupt-labels",
                                      "corrupt-summary"])
def test_unusable_run_directory_is_exit_2_and_left_as_it_was(tmp_path, occupant):
    protocol = _tasks(lambda d, _: None)(tmp_path)
    names, ignore = _occupy(tmp_path, protocol, occupant)
    _run_and_check(tmp_path, protocol, names, ignore)


@pytest.mark.parametrize("name", ["../x.json", "paths/../../x.json", "/tmp/x.json", ".", "models/../.."])
def test_store_writes_nothing_outside_its_run_directory(tmp_path, name):
    store = Store(tmp_path / "run")
    with pytest.raises(OutsideRunDir):
        store.write_json(name, {})
    with pytest.raises(OutsideRunDir):
        store.write_xyz(name, [])
    with pytest.raises(OutsideRunDir):
        store.keep_model([], "../../" + name)  # models/<name>/
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert store.write_json("paths/../results/ok.json", {}) == tmp_path / "run" / "results" / "ok.json"


def test_misspelt_site_field_is_exit_2_with_close_matches(tmp_path):
    site = yaml.safe_load((ROOT / "site-configs" / "local.yaml").read_text())
    site["resorces"] = site.pop("resources")
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(site))
    protocol = _tasks(lambda d, _: None)(tmp_path)
    p = cli("check", "--site", tmp_path / "site.yaml", protocol, cwd=tmp_path)
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"{tmp_path / 'site.yaml'}: field 'resorces'" in p.stderr, p.stderr
    assert "(did you mean 'resources'?)" in p.stderr, p.stderr
