"""Developer sessions: tests, lint (ruff + mypy --strict), demo, bench.

nox -s tests        the whole suite (needs redis-server etc.: see .ci/run)
nox -s lint         ruff (lint and format check) and mypy --strict on the package
nox -s demo         a node on the embedded store, used through redis-py
nox -s bench        redis-benchmark against redis, twemproxy and trinomite
nox -s bench_memcached  the same for memcached nodes (bench/memcached.py)
nox -s fuzz         atheris on each parser target for longer (default 2 million
                    inputs each; -- -runs=N to change), new inputs kept in .fuzz/
nox -s soak         10 minutes of load on 4 node processes while a nemesis kills and
                    restarts datastores and a node; RSS, fds, tasks must stay flat
nox -s chaos        the checker at every consistency level on a 2-DC cluster under a
                    nemesis (30 faults each by default): no acked write may be lost
nox -s wheel        build sdist + wheel, twine check, install the wheel alone into a
                    venv with no system packages (dependencies from PyPI), run the
                    CLI and a plugin test there
"""

from __future__ import annotations

import glob
import os
import shutil

import nox

HERE = os.path.dirname(os.path.abspath(__file__))

nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("-e", ".[lint,test]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session
def demo(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("python", "bench/run.py", *session.posargs)


@nox.session
def bench_memcached(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("python", "bench/memcached.py", *session.posargs)


@nox.session
def wheel(session: nox.Session) -> None:
    tmp = session.create_tmp()
    dist = f"{tmp}/dist"
    session.install("build", "twine")
    session.run("python", "-m", "build", "--outdir", dist)
    session.run("python", "-m", "twine", "check", "--strict", *glob.glob(f"{dist}/*"))
    (wheel_file,) = glob.glob(f"{dist}/*.whl")
    session.install(f"{wheel_file}", "pytest")
    session.chdir(tmp)
    session.run("trinomite", "-V")
    os.makedirs("conf", exist_ok=True)
    shutil.copy(os.path.join(HERE, "conf", "redis_single.yml"), "conf")
    session.run("python", "-m", "trinomite", "-t", "conf/redis_single.yml")
    with open("test_wheel_plugin.py", "w") as test:
        test.write(
            "def test_plugin(trinomite_redis):\n"
            "    assert trinomite_redis.set('k', 'v')\n"
            "    assert trinomite_redis.get('k') == b'v'\n"
        )
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_wheel_plugin.py")


@nox.session
def fuzz(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    runs = session.posargs or ["-runs=2000000"]
    for target in ("requests", "frames", "replies", "mc_requests", "mc_replies"):
        found = os.path.join(HERE, ".fuzz", target)
        os.makedirs(found, exist_ok=True)
        session.run(
            "python",
            "tests/fuzz/fuzz_parsers.py",
            *runs,
            f"-artifact_prefix={found}-",
            found,
            f"tests/fuzz/corpus/{target}",
            env={"FUZZ_TARGET": target},
        )


@nox.session
def soak(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("python", "bench/soak.py", *session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("python", "bench/chaos.py", *session.posargs)
