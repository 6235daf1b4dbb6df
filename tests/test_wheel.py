"""The package as a user installs it: sdist and wheel, a fresh venv, the CLI and the plugin.

``python -m build`` makes the sdist and then the wheel *from the sdist* (so
a file missing from the sdist breaks the wheel), ``twine check`` validates
both as PyPI would, and the wheel is installed into a new virtual
environment.  That venv sees the system's site-packages for the
dependencies (the check runs offline and in seconds), so the test proves
that the venv imports trinomite from the wheel, not from this checkout: the
console script, ``python -m trinomite`` from a directory outside the
checkout, and a pytest run whose only trinomite is the wheel's plugin.
``nox -s wheel`` does the same into a venv without system packages,
installing the dependencies the wheel declares from PyPI.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import trinomite

ROOT = Path(__file__).resolve().parent.parent
#: Bound for each step (seconds).
STEP = 300

PLUGIN_TEST = """
import trinomite


def test_from_the_wheel(trinomite_redis, trinomite_node):
    assert trinomite.__file__.startswith({venv!r}), trinomite.__file__
    assert trinomite_redis.set("wheel", "ok")
    assert trinomite_redis.get("wheel") == b"ok"
"""


def _run(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=STEP
    )
    assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT, cwd=ROOT)
    return out


def test_sdist_and_wheel_pass_twine_check(dist: Path) -> None:
    files = sorted(p.name for p in dist.iterdir())
    version = trinomite.__version__
    assert files == [f"trinomite-{version}-py3-none-any.whl", f"trinomite-{version}.tar.gz"]
    output = _run(sys.executable, "-m", "twine", "check", "--strict", *dist.iterdir(), cwd=dist)
    assert output.count("PASSED") == 2


def test_the_wheel_in_a_fresh_venv(dist: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    (wheel,) = dist.glob("*.whl")
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path)
    site = _run(python, "-c", "import trinomite; print(trinomite.__file__)", cwd=tmp_path)
    assert site.strip().startswith(str(env_dir)), site

    assert trinomite.__version__ in _run(env_dir / "bin" / "trinomite", "-V", cwd=tmp_path)
    (tmp_path / "conf").mkdir()
    shutil.copy(ROOT / "conf" / "redis_single.yml", tmp_path / "conf")
    checked = _run(python, "-m", "trinomite", "-t", "conf/redis_single.yml", cwd=tmp_path)
    assert "valid" in checked

    project = tmp_path / "project"
    project.mkdir()
    (project / "test_app.py").write_text(PLUGIN_TEST.format(venv=str(env_dir)))
    output = _run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=project)
    assert "1 passed" in output
