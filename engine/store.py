"""The run directory: labelled data with provenance, models, summary, report.

    runs/<name>/
      protocol.yaml, protocol.sha256   the protocol this directory belongs to (resume refuses others)
      journal.db                       engine: task hash -> result
      labels.db                        ASE database of reference labels: energy, forces, stress as calculator
                                       results (`ase db` shows energy and fmax), provenance as key-value pairs
                                       (block, iteration, reason, task, weights, config_type)
      dataset.xyz                      the training set as extxyz: REF_energy, REF_forces, REF_stress, weights
                                       under the keys mace_run_train and gap_fit read, E0 atoms as IsolatedAtom
      models/                          trained models (copies named by block and iteration)
      summary.json                     results for people and scripts
      report/                          figures and index.html
      preview/                         `reactforge check`'s structures as built (workflows/preview.py)

Only successful reference results reach `add_label`. Every file is written through `atomic_file`: to a
temporary name beside its destination, renamed over it (os.replace) only once complete, so a reader or a
killed coordinator never sees half a file. Workflows write nothing themselves; they hand their data and
figures to the store (`write_json`, `write_xyz`, `write_text`, `write_bytes`, `atomic_path`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.db import connect
from ase.io import write

from reactforge.schemas.loading import PROTOCOL_BASE, InputError
from reactforge.schemas.results import SinglePointResult
from reactforge.schemas.tasks import ISOLATED_ATOM, ISOLATED_ATOM_TYPES, GAPModelSpec


@contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """The one way files are written: yields a temporary path beside `path` (same folder, same suffix, so
    writers that go by the extension still do); when the block ends without error it is renamed over
    `path`, otherwise removed. Parent folders are made. The temporary name is unique per call, so threads
    writing the same file do not collide; the last rename wins."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path | str, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def protocol_digest(text: str) -> str:
    """The protocol's identity: the digest of its YAML's data, so that a comment or layout edit still
    resumes the run while any changed value does not (text that is not YAML: the text's own digest)."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return sha256_text(text)
    return sha256_text(json.dumps(data, sort_keys=True, default=str))


class ProtocolMismatch(Exception):
    pass


class OutsideRunDir(ValueError):
    """A file name that would put a file outside the run directory (`../x`, an absolute path)."""


class Store:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "models").mkdir(exist_ok=True)
        (self.run_dir / "report").mkdir(exist_ok=True)
        self._lock = threading.RLock()
        self._db = connect(self.run_dir / "labels.db", type="db", use_lock_file=False)
        self._summary: dict = self.read_json("summary.json") or {}

    # ------------------------------------------------------------------ protocol identity
    @staticmethod
    def claim(run_dir: Path, protocol_text: str, force_new: bool, source_dir: Path | None = None) -> str:
        """Tie a run directory to a protocol. Same protocol -> resume; other -> refuse (or archive it).

        source_dir: the folder of the protocol file. The run's copy, protocol.yaml, keeps the text as
        written, so its relative file names (structures, intermediates) resolve against that folder,
        recorded in protocol.base (schemas.loading.load_protocol reads it).

        Returns "new", "resume" or "archived:<path>".
        """
        run_dir = Path(run_dir)
        digest = protocol_digest(protocol_text)
        stamp = run_dir / "protocol.sha256"
        if run_dir.exists() and not run_dir.is_dir():
            raise ProtocolMismatch(f"{run_dir} is a file, not a run directory; choose another --run-dir")
        if not stamp.exists():
            # preview/ is what `reactforge check` wrote into the run directory it would use
            if run_dir.is_dir() and any(p.name not in ("coordinator.lock", "preview") for p in run_dir.iterdir()):
                raise ProtocolMismatch(f"{run_dir} is not empty and holds no reactforge run (no protocol.sha256); "
                                       "choose another --run-dir")
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "protocol.yaml", protocol_text)
            _record_base(run_dir, source_dir)
            atomic_write_text(stamp, digest + "\n")
            return "new"
        # runs stamped before protocol_digest carry the digest of their text
        if stamp.read_text().strip() in (digest, sha256_text(protocol_text)):
            if (run_dir / "protocol.yaml").is_file() and (run_dir / "protocol.yaml").read_text() != protocol_text:
                atomic_write_text(run_dir / "protocol.yaml", protocol_text)  # the comments as they are now
            _record_base(run_dir, source_dir)
            atomic_write_text(stamp, digest + "\n")
            return "resume"
        if not force_new:
            raise ProtocolMismatch(
                f"{run_dir} holds a run of a different protocol (see {run_dir / 'protocol.yaml'}); "
                "re-run with --force-new to keep that run aside and start afresh, or choose another --run-dir"
            )
        n = 1
        while (archive := run_dir.with_name(f"{run_dir.name}.previous-{n}")).exists():
            n += 1
        shutil.move(str(run_dir), str(archive))  # never delete a run's state: move it aside
        Store.claim(run_dir, protocol_text, force_new=False, source_dir=source_dir)
        return f"archived:{archive}"

    @staticmethod
    def check_readable(run_dir: Path) -> None:
        """InputError naming the file if a run directory's databases or summary cannot be read, so a resume
        stops before it touches anything instead of with a traceback from inside the engine. Opened read-only
        and immutable (no lock, no -wal/-shm files made); reading the schema finds a file that is no SQLite
        database, not every damaged page."""
        run_dir = Path(run_dir)
        for path in (run_dir / "journal.db", run_dir / "labels.db"):
            if not path.is_file():
                continue
            try:
                with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)) as db:
                    db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.DatabaseError as err:
                raise InputError(path, [f"cannot be read as a database ({err}); the run cannot resume: move the run "
                                        "directory aside, or choose another --run-dir"]) from None
        summary = run_dir / "summary.json"
        if summary.is_file():
            try:
                json.loads(summary.read_bytes())
            except ValueError as err:  # UnicodeDecodeError included
                raise InputError(summary, [f"not JSON ({err}); move the run directory aside, or choose another "
                                           "--run-dir"]) from None

    def _path(self, name: str | Path) -> Path:
        """run_dir/name, refused unless it stays inside the run directory. Lexical (normpath), not resolved:
        a folder the user links into the run directory (e.g. models/ on another disk) is still theirs to use."""
        path = Path(os.path.normpath(self.run_dir / name))
        root = Path(os.path.normpath(self.run_dir))
        if path == root or root not in path.parents:
            raise OutsideRunDir(f"{name!r} is not a file name inside the run directory {self.run_dir}")
        return path

    # ------------------------------------------------------------------ labels
    def add_label(self, result: SinglePointResult, *, block: str, iteration: int, reason: str, task: str,
                  energy_weight: float = 1.0, force_weight: float = 1.0, config_type: str | None = None,
                  extra: dict | None = None) -> int | None:
        """Record one reference label; returns its row id (None if this task was labelled before)."""
        with self._lock:
            if self._db.count(task=task) > 0:  # resume replays: a task is labelled once
                return None
            atoms = result.atoms.copy()
            kv = {"block": block, "iteration": int(iteration), "reason": reason, "task": task,
                  "REF_energy": float(result.energy_eV), "energy_weight": float(energy_weight),
                  "force_weight": float(force_weight), "reference": result.reference,
                  "config_type": config_type or block}
            kv.update(extra or {})
            results = {"energy": float(result.energy_eV), "forces": np.asarray(result.forces_eV_per_A, dtype=float)}
            data = {}
            if result.stress_eV_per_A3 is not None:
                results["stress"] = np.asarray(result.stress_eV_per_A3, dtype=float)  # Voigt 6, as ASE's
                data["REF_stress"] = results["stress"]
            atoms.calc = SinglePointCalculator(atoms, **results)
            return self._db.write(atoms, key_value_pairs=kv, data=data)

    def training_set(self, **selection) -> list[Atoms]:
        """Labelled structures with info REF_energy/REF_stress, arrays REF_forces, weights and provenance.

        Ordered by task key (content), not by arrival: concurrent labelling must not change a fit's input."""
        out = []
        with self._lock:
            rows = sorted(self._db.select(**selection), key=lambda row: row.task)
        for row in rows:
            a = row.toatoms()
            a.calc = None  # the labels travel as REF_* keys, so a model's calculator never shadows them
            a.info.update(row.key_value_pairs)
            # rows of earlier runs kept forces in data only
            a.arrays["REF_forces"] = np.asarray(row.data["REF_forces"] if "REF_forces" in row.data else row.forces)
            if "REF_stress" in row.data:
                a.info["REF_stress"] = np.asarray(row.data["REF_stress"])
            out.append(a)
        return out

    def count(self, **selection) -> int:
        with self._lock:
            return self._db.count(**selection)

    def export_dataset(self, name: str = "dataset.xyz", sigmas: tuple[float, float, float] | None = None) -> Path:
        """The training set as extxyz that mace_run_train and gap_fit read unchanged: E0 atoms tagged
        config_type=IsolatedAtom, weights as MACE's config_energy/forces/stress_weight and as gap_fit's
        per-configuration energy_sigma/force_sigma/virial_sigma.

        sigmas: gap_fit's default (energy per atom, force, virial per atom) sigmas that a weight w divides;
        default the GAP model's defaults. As in the fit (tasks/training/gap.py), per-configuration energy
        and virial sigmas are absolute, so scaled by sqrt(number of atoms)."""
        if sigmas is None:
            fields = GAPModelSpec.model_fields
            sigmas = tuple(fields[k].default for k in ("sigma_energy_eV", "sigma_force_eV_per_A", "sigma_virial_eV"))
        frames = self.training_set()
        for a in frames:
            if a.info.get("config_type") in ISOLATED_ATOM_TYPES:
                a.info["config_type"] = ISOLATED_ATOM
            w_e, w_f = float(a.info.get("energy_weight", 1.0)), float(a.info.get("force_weight", 1.0))
            a.info.update(config_energy_weight=w_e, config_forces_weight=w_f, config_stress_weight=w_e,
                          energy_sigma=sigmas[0] * np.sqrt(len(a)) / w_e, force_sigma=sigmas[1] / w_f,
                          virial_sigma=sigmas[2] * np.sqrt(len(a)) / w_e)
        return self.write_xyz(name, frames)

    def write_xyz(self, name: str, frames: list[Atoms]) -> Path:
        """Structures as extxyz at run_dir/name (subdirectories made), written atomically."""
        with self.atomic_path(name) as tmp:
            write(tmp, frames, format="extxyz")
        return self._path(name)

    # ------------------------------------------------------------------ files
    @property
    def report_dir(self) -> Path:
        """report/: figures and index.html."""
        return self.run_dir / "report"

    @contextmanager
    def atomic_path(self, name: str) -> Iterator[Path]:
        """A temporary path to write run_dir/name to (e.g. a figure's savefig); renamed into place when
        the block ends without error."""
        with atomic_file(self._path(name)) as tmp:
            yield tmp

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self._path(name), text)

    def write_bytes(self, name: str, data: bytes) -> Path:
        return atomic_write_bytes(self._path(name), data)

    # ------------------------------------------------------------------ models, json, summary
    def keep_model(self, paths: list[str], name: str) -> list[str]:
        """Copy model files into models/<name>/ (the task workdir holds the original)."""
        dest = self._path(Path("models") / name)
        dest.mkdir(parents=True, exist_ok=True)
        kept = []
        for p in paths:
            target = dest / Path(p).name
            if not target.exists():
                with atomic_file(target) as tmp:
                    shutil.copyfile(p, tmp)
            kept.append(str(target))
        return kept

    @staticmethod
    def model_ref(model: str, paths: list[str | Path], uncertainty: str = "energy"):
        """The ModelRef of model files this run did not fit (a protocol names them): their sha256 is the
        model's identity in every task key."""
        from reactforge.schemas.tasks import ModelRef
        from reactforge.tasks.train import files_sha256  # the digest fitted models get

        paths = [Path(p) for p in paths]
        return ModelRef(model=model, paths=[str(p) for p in paths], uncertainty=uncertainty,
                        sha256=files_sha256(paths))

    def write_json(self, name: str, obj) -> Path:
        path = self._path(name)
        atomic_write_text(path, json.dumps(obj, indent=2, default=_jsonable))
        return path

    def read_json(self, name: str):
        path = self._path(name)
        return json.loads(path.read_text()) if path.exists() else None

    def update_summary(self, **entries) -> dict:
        with self._lock:
            self._summary.update(entries)
            self.write_json("summary.json", self._summary)
            return dict(self._summary)


def _jsonable(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _record_base(run_dir: Path, source_dir: Path | None) -> None:
    if source_dir is not None:
        atomic_write_text(run_dir / PROTOCOL_BASE, str(Path(source_dir).resolve()) + "\n")
