"""The package as users get it: a built wheel installed into a fresh virtual environment, its
commands run from a directory outside the checkout (an editable install hides import bugs:
its path hook imports modules the package forgot to import itself); and every module of the
package imported on its own in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "asprof"


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _clean_env() -> dict:
    # Nothing from the test run may leak in: no PYTHONPATH pointing at the checkout.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _import_alone(module: str) -> tuple[str, int, str]:
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                          text=True, timeout=120, env=_clean_env())
    return module, proc.returncode, proc.stderr.strip().splitlines()[-1:]


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    modules = _modules()
    assert "asprof.cli" in modules and "asprof.simulate.engine" in modules
    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [(m, err) for m, rc, err in pool.map(_import_alone, modules) if rc != 0]
    assert not failed, f"modules that do not import on their own: {failed}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A wheel built from the checkout, installed (with its dependencies) into a new venv."""
    base = tmp_path_factory.mktemp("wheel-install")
    dist = base / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(dist), str(ROOT)], check=True, timeout=300, env=_clean_env())
    (wheel,) = dist.glob("asprof-*.whl")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    subprocess.run([str(bindir / "python"), "-m", "pip", "install", "-q", str(wheel)],
                   check=True, timeout=600, env=_clean_env())
    work = base / "elsewhere"
    work.mkdir()
    return wheel, bindir, work


def _asprof(installed, *args, timeout=300):
    _, bindir, work = installed
    return subprocess.run([str(bindir / "asprof"), *args], cwd=work, capture_output=True,
                          text=True, timeout=timeout, env=_clean_env())


@pytest.mark.slow
def test_wheel_carries_what_the_commands_need(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    profiles = {p.name for p in (PACKAGE / "traces" / "profiles").glob("*.json")}
    assert profiles, "the checkout has no bundled profiles"
    shipped = {Path(n).name for n in names if n.startswith("asprof/traces/profiles/")}
    assert profiles <= shipped, f"profiles missing from the wheel: {profiles - shipped}"
    sources = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    assert sources <= names, f"modules missing from the wheel: {sorted(sources - names)[:5]}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "asprof = asprof.cli:run" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_installed_package_runs_its_commands_outside_the_checkout(installed):
    _, bindir, work = installed
    where = subprocess.run([str(bindir / "python"), "-c", "import asprof; print(asprof.__file__)"],
                           cwd=work, capture_output=True, text=True, env=_clean_env())
    assert str(ROOT) not in where.stdout and "site-packages" in where.stdout, where.stdout

    r = _asprof(installed, "--help")
    assert r.returncode == 0, r.stderr
    for name in ("probe", "simulate", "train", "validate", "show", "plot"):
        assert name in r.stdout

    r = _asprof(installed, "simulate", "--nodes", "16", "--sparsity", "0.1")
    assert r.returncode == 0, r.stderr
    assert "topkpop" in r.stdout and "ms" in r.stdout

    r = _asprof(installed, "show", "m2-max")
    assert r.returncode == 0, r.stderr
    assert "m2-max" in r.stdout.lower()

    r = _asprof(installed, "train", "--steps", "3", "--model", "tiny", "--json")
    assert r.returncode == 0, r.stderr
    assert '"steps"' in r.stdout
    assert list((work / "runs").glob("*.json")), "train wrote no result where it was run"
