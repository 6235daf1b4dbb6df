"""Developer sessions: tests, lint (ruff + mypy --strict), demo, bench.

nox -s tests        the whole suite (needs redis-server etc.: see .ci/run)
nox -s lint         ruff (lint and format check) and mypy --strict on the package
nox -s demo         a node on the embedded store, used through redis-py
nox -s bench        redis-benchmark against redis, twemproxy and trinomite
"""

from __future__ import annotations

import nox

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
