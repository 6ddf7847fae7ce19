"""`pip install .` (not editable) gives a `reactforge` command that works from any folder.

The repository's files (tracked ones and untracked ones git does not ignore: what the working tree
would ship) are copied to a temporary folder, built into a wheel there and installed without
dependencies into a fresh virtual environment. Downloading the dependencies would take gigabytes, so
that environment borrows the project environment's installed packages through a .pth line. Such a
line only appends a folder to sys.path; the .pth files inside that folder (the editable install's
finder among them) are not run, so `reactforge` can only come from the new install, which the test
checks. Nothing is downloaded: the wheel is built with the setuptools already installed.
"""
from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_SHIPPED = ("tests", "benchmarks")  # folders of the repository that are not part of the package


def _run(cmd, cwd=None, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, **kw)


@pytest.fixture(scope="module")
def install(tmp_path_factory):
    """(the repository's files, the wheel, the new environment's bin folder)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know the repository's files")
    tmp = tmp_path_factory.mktemp("install")
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    src = tmp / "src"
    files = [name for name in listed.stdout.split("\0") if name and (ROOT / name).is_file()]  # not deleted ones
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)

    p = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
              "-w", tmp / "dist", src])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    wheel = next((tmp / "dist").glob("reactforge-*.whl"))

    venv = tmp / "venv"
    p = _run([sys.executable, "-m", "venv", "--without-pip", venv])
    assert p.returncode == 0, p.stderr
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    ours = sysconfig.get_paths()
    Path(site, "borrowed-dependencies.pth").write_text("\n".join(dict.fromkeys([ours["purelib"], ours["platlib"]])) + "\n")
    p = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return files, wheel, venv / "bin"


def test_the_wheel_holds_every_package_and_the_data_files(install):
    files, wheel, _ = install
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [f for f in files if f.split("/")[0] not in NOT_SHIPPED]
    packages = [f for f in shipped if f.endswith("__init__.py")]
    missing = [f"reactforge/{f}" for f in packages if f"reactforge/{f}" not in names]
    assert not missing, f"not in the wheel: {missing}; list their packages in pyproject.toml [tool.setuptools]"
    data = [f for f in shipped if fnmatch.fnmatch(f, "site-configs/*.yaml") or fnmatch.fnmatch(f, "examples/*")
            or fnmatch.fnmatch(f, "schemas/json/*.json")]
    assert "examples/quickstart.yaml" in data
    assert not [f for f in data if f"reactforge/{f}" not in names]
    assert "reactforge-0.1.0.dist-info/licenses/LICENSE" in names


def test_installed_command_checks_the_shipped_quickstart_from_another_folder(install, tmp_path):
    _, _, bin_dir = install
    where = _run([bin_dir / "python", "-c", "import reactforge; print(reactforge.__file__)"], cwd=tmp_path)
    installed = Path(where.stdout.strip())
    assert installed.is_relative_to(bin_dir.parent) and not installed.is_relative_to(ROOT), where

    p = _run([bin_dir / "reactforge", "check", "--site", "local-htex", "quickstart"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    quickstart = installed.parent / "examples" / "quickstart.yaml"
    assert f"protocol {quickstart} (workflow catalysis) is valid" in p.stdout
    assert "plan:" in p.stdout and "block 6 (neb)" in p.stdout
    assert f"site local-htex ({installed.parent / 'site-configs' / 'local-htex.yaml'}) would start:" in p.stdout
    # a check writes only its preview of the structures, into the run directory it would use
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["quickstart-zno-vacancy"]
    assert [p.name for p in (tmp_path / "runs" / "quickstart-zno-vacancy").iterdir()] == ["preview"]

    # every shipped example validates as installed (its structure files are package data too)
    for example in ("singlepoints", "nmr_precomputed", "in2o3-co2-hydrogenation"):
        p = _run([bin_dir / "reactforge", "check", example], cwd=tmp_path)
        assert p.returncode == 0, (example, p.stderr)


def test_installed_command_exits_2_on_a_bad_protocol(install, tmp_path):
    _, _, bin_dir = install
    bad = tmp_path / "bad.yaml"
    shipped = (Path(__file__).resolve().parents[1] / "examples" / "quickstart.yaml").read_text()
    bad.write_text(shipped.replace("\nsigma_thr_eV: 0.05", "\nsigma_thr_eV: -1"))  # one bad field, the rest valid
    p = _run([bin_dir / "reactforge", "check", "--site", "local-htex", bad], cwd=tmp_path)
    assert p.returncode == 2
    assert str(bad) in p.stderr and "sigma_thr_eV" in p.stderr
