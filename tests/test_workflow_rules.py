"""Workflows decide what to compute; they neither compute with models nor write files themselves.

Read from the source of every workflows/*.py:
- imports: nothing from reactforge.tasks except the NMR physics (reactforge.tasks.nmr), which builds no
  calculator and loads no model; task code runs through the engine;
- file writes: no open(), Path.write_text/write_bytes/mkdir/touch/unlink, os.replace/rename/remove,
  tempfile, shutil, numpy/json/pickle dumps; a figure's savefig, ase.io.write or the NMR plot_panels
  only into the temporary path the store hands out (`with store.atomic_path(name) as tmp` or
  engine.store.atomic_file), so every file goes through the store's one atomic-write helper.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.py"))
PACKAGE = "reactforge.workflows"

ALLOWED_TASK_MODULES = ("reactforge.tasks.nmr",)
WRITING_MODULES = {"tempfile", "shutil", "pickle"}
# module.function calls that write or move files
QUALIFIED = {("os", "replace"), ("os", "rename"), ("os", "remove"), ("os", "unlink"), ("os", "open"),
             ("os", "fdopen"), ("os", "makedirs"), ("os", "mkdir"), ("np", "save"), ("np", "savez"),
             ("np", "savetxt"), ("numpy", "save"), ("numpy", "savez"), ("numpy", "savetxt"), ("json", "dump"),
             ("yaml", "dump"), ("yaml", "safe_dump"), ("pickle", "dump")}
# methods that write (Path's, file objects')
METHODS = {"write_text", "write_bytes", "mkdir", "touch", "unlink", "rmdir", "symlink_to", "hardlink_to",
           "to_csv", "tofile"}
# writers that take the destination as first argument: allowed only into the store's temporary path
INTO_STORE = {"savefig", "plot_panels"}
ATOMIC = {"atomic_path", "atomic_file"}


def _absolute(module: str | None, level: int) -> str:
    if not level:
        return module or ""
    base = PACKAGE.split(".")[: len(PACKAGE.split(".")) - level + 1]
    return ".".join(base + ([module] if module else []))


def _is_task_import(module: str) -> bool:
    return (module == "reactforge.tasks" or module.startswith("reactforge.tasks.")) and not any(
        module == m or module.startswith(m + ".") for m in ALLOWED_TASK_MODULES)


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def violations(source: str) -> list[str]:
    """What in one module's source breaks the rules (line: what)."""
    tree = ast.parse(source)
    found: list[str] = []
    ase_write: set[str] = set()  # local names of ase.io.write
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_task_import(alias.name) or alias.name.split(".")[0] in WRITING_MODULES:
                    found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level)
            for alias in node.names:
                # `from reactforge.tasks import nmr` imports a module: judge the module it names
                target = f"{module}.{alias.name}" if module in ("reactforge", "reactforge.tasks") else module
                if _is_task_import(target):
                    found.append(f"{node.lineno}: from {module} import {alias.name}")
                if module.split(".")[0] in WRITING_MODULES:
                    found.append(f"{node.lineno}: from {module} import {alias.name}")
                if module == "ase.io" and alias.name == "write":
                    ase_write.add(alias.asname or "write")
    # names bound to the store's temporary paths: `with <...>.atomic_path(...) as tmp`
    atomic: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                call = item.context_expr
                if isinstance(call, ast.Call) and _name(call.func) in ATOMIC and isinstance(item.optional_vars, ast.Name):
                    atomic.add(item.optional_vars.id)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func, name = node.func, _name(node.func)
        if isinstance(func, ast.Name) and func.id == "open":
            found.append(f"{node.lineno}: open()")
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and \
                (func.value.id, func.attr) in QUALIFIED:
            found.append(f"{node.lineno}: {func.value.id}.{func.attr}()")
        elif isinstance(func, ast.Attribute) and name in METHODS and _name(func.value) != "store":
            found.append(f"{node.lineno}: .{name}()")  # the store's own write_text/write_bytes are its atomic writes
        is_ase_write = (isinstance(func, ast.Name) and func.id in ase_write) or (
            isinstance(func, ast.Attribute) and func.attr == "write" and isinstance(func.value, ast.Attribute)
            and func.value.attr == "io")
        if name in INTO_STORE or is_ase_write:
            dest = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg in ("fname", "path", "filename", "images")), None)
            if not (isinstance(dest, ast.Name) and dest.id in atomic):
                found.append(f"{node.lineno}: {name}() to a path that is not the store's atomic path")
    return found


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_module_keeps_to_the_engine_and_the_store(path):
    assert violations(path.read_text()) == []


@pytest.mark.parametrize("source", [
    "from reactforge.tasks.mlff import load_mlff",
    "from reactforge.tasks import singlepoint",
    "from reactforge import tasks",
    "import reactforge.tasks.train",
    "from ..tasks.context import TaskContext",
    "def f():\n    from reactforge.tasks.train import files_sha256",
    "import tempfile",
    "from shutil import copyfile",
    "open('x.txt', 'w').write('a')",
    "path.write_text('a')",
    "(run_dir / 'report').mkdir()",
    "os.replace(a, b)",
    "json.dump(obj, fh)",
    "fig.savefig(run_dir / 'a.png')",
    "fig.savefig(fname=path)",
    "from ase.io import write\nwrite(run_dir / 'a.xyz', frames)",
    "import ase.io\nase.io.write('a.xyz', frames)",
    "spectra.plot_panels(store.run_dir / 'x.png', axis, panels, labels)",
    "with open('x') as tmp:\n    fig.savefig(tmp)",
])
def test_the_rules_catch(source):
    assert violations(source), source


@pytest.mark.parametrize("source", [
    "from reactforge.tasks.nmr import rates, spectra",
    "from reactforge.tasks import nmr",
    "from ..tasks.nmr import tensors",
    "from reactforge.tasks.nmr.rates import harmonic_populations",
    "from reactforge.engine.store import atomic_file",
    "with store.atomic_path('report/a.png') as tmp:\n    fig.savefig(tmp, dpi=120)",
    "with atomic_file(path) as tmp:\n    spectra.plot_panels(tmp, axis, panels, labels)",
    "store.write_json('a.json', {})\nstore.write_xyz('paths/a.xyz', frames)",
    "self.store.write_text('free_energy/a.dat', text)",
    "atoms = atoms.copy()\nname = name.replace('-', '_')\nread(protocol.resolve(name))",
])
def test_the_rules_allow(source):
    assert violations(source) == []
