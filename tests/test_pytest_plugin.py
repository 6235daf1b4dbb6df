"""The pytest plugin, used as an application's test suite would use it.

Each test writes example test files (``plugin_examples``) into a
``pytester`` directory and runs a real pytest subprocess on them, with the
plugin loaded from the installed package's ``pytest11`` entry point (no
conftest.py beyond the leak check).  After every run, including one that
fails on purpose, one whose cluster cannot start and one interrupted with
SIGINT, the run's own report must show no listening socket, no child
process (redis-server) and no cluster thread left in its process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from . import plugin_examples as examples

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "testing.md"
#: Bound for one example run (seconds).
RUN_TIMEOUT = 120


def _prepare(pytester: pytest.Pytester, trio_mode: bool = False, **files: str) -> None:
    pytester.makeconftest(examples.LEAK_CHECK)
    pytester.makeini(
        "[pytest]\naddopts = -p no:cacheprovider\n" + ("trio_mode = true\n" if trio_mode else "")
    )
    for name, source in files.items():
        pytester.makepyfile(**{name: source})


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, timeout=RUN_TIMEOUT)


def _assert_no_leaks(pytester: pytest.Pytester, processes: int = 1) -> None:
    reports = [json.loads(p.read_text()) for p in pytester.path.glob("leaks-*.json")]
    assert len(reports) == processes, reports
    for report in reports:
        assert report["listeners"] == [], report
        assert report["children"] == [], report
        assert report["threads"] == [], report


def test_every_fixture_in_sync_tests(pytester: pytest.Pytester) -> None:
    _prepare(pytester, test_app=examples.SYNC_TESTS)
    result = _run(pytester, "-q")
    result.assert_outcomes(passed=6)
    _assert_no_leaks(pytester)


def test_function_fixtures_in_trio_tests(pytester: pytest.Pytester) -> None:
    _prepare(pytester, trio_mode=True, test_app=examples.TRIO_TESTS)
    result = _run(pytester, "-q")
    result.assert_outcomes(passed=3)
    _assert_no_leaks(pytester)


def test_parallel_workers_never_collide(pytester: pytest.Pytester) -> None:
    """Both example files at once under pytest-xdist: every port is ephemeral and held.

    ``--dist loadfile`` keeps a module on one worker, as a module-scoped
    fixture shared by its tests needs.
    """
    _prepare(pytester, trio_mode=True, test_sync=examples.SYNC_TESTS, test_trio=examples.TRIO_TESTS)
    result = _run(pytester, "-q", "-n", "2", "--dist", "loadfile")
    result.assert_outcomes(passed=9)
    _assert_no_leaks(pytester, processes=3)  # the controller and two workers


def test_failing_test_and_start_up_error_clean_up(pytester: pytest.Pytester) -> None:
    _prepare(pytester, test_failures=examples.FAILING_TESTS)
    result = _run(pytester, "-q")
    result.assert_outcomes(failed=2)
    output = result.stdout.str()
    assert "failing on purpose" in output
    assert "ClusterStartError: node dc1/r2/0 did not start" in output
    assert re.search(r"cannot listen on 127\.0\.0\.1:\d+ \(stats_listen\)", output)
    # The start-up error carries the nodes' own log: dc1/r1/0 started and said so.
    assert "--- trinomite log, last" in output
    assert re.search(r"INFO trinomite\.node: node listening for clients", output)
    _assert_no_leaks(pytester)


def test_missing_redis_server_names_the_package(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _prepare(pytester, test_redis="def test_redis(trinomite_node):\n    pass\n")
    monkeypatch.setenv("PATH", str(pytester.path / "empty-bin"))
    result = _run(pytester, "-q", "--trinomite-datastore", "redis")
    result.assert_outcomes(errors=1)
    assert "apt-get install redis-server" in result.stdout.str()
    _assert_no_leaks(pytester)


def test_options_from_the_command_line_and_the_ini_file(pytester: pytest.Pytester) -> None:
    redis = shutil.which("redis-server")
    assert redis is not None
    _prepare(pytester, test_options=examples.OPTION_TESTS)
    pytester.makeini(
        "[pytest]\naddopts = -p no:cacheprovider\n"
        f"trinomite_redis_exec = {redis}\ntrinomite_startup_timeout = 12.5\n"
    )
    _run(pytester, "-q", "--trinomite-datastore", "redis").assert_outcomes(passed=1)
    bad = _run(pytester, "-q", "--trinomite-datastore", "memcached")
    assert "trinomite_datastore must be embedded or redis" in bad.stderr.str()


@pytest.mark.parametrize("trio_mode", [False, True], ids=["sync", "trio"])
def test_ctrl_c_stops_everything(pytester: pytest.Pytester, trio_mode: bool) -> None:
    source = examples.INTERRUPTED_TEST
    if trio_mode:
        source = source.replace("def test_waits", "async def test_waits")
        source = source.replace("    trinomite_cluster(", "    await trinomite_cluster(")
        source = source.replace("time.sleep(60)", "await __import__('trio').sleep(60)")
    _prepare(pytester, trio_mode=trio_mode, test_interrupted=source)
    marker = pytester.path / "marker"
    env = {**os.environ, "TRINOMITE_MARKER": str(marker)}
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=pytester.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not marker.exists():
            assert run.poll() is None, run.stdout.read() if run.stdout else ""
            assert time.monotonic() < deadline, "the cluster never came up"
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        output, _ = run.communicate(timeout=RUN_TIMEOUT)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    # pytest stops the session; under pytest-trio the interrupt surfaces
    # inside the test's Trio run, which fails that test and ends the session.
    expected = pytest.ExitCode.TESTS_FAILED if trio_mode else pytest.ExitCode.INTERRUPTED
    assert run.returncode == expected, output
    assert b"KeyboardInterrupt" in output
    _assert_no_leaks(pytester)


def _doc_examples() -> dict[str, str]:
    """docs/testing.md's example files: python blocks whose first line is ``# test_*.py``."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    files = {}
    for block in blocks:
        first = block.splitlines()[0]
        if re.fullmatch(r"# (test_\w+)\.py", first):
            files[first[2:-3]] = block
    return files


def _readme_example() -> str:
    for block in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S):
        if "(trinomite_cluster)" in block:
            return str(block)
    raise AssertionError("README.md has no trinomite_cluster example")


def test_the_documented_examples_pass(pytester: pytest.Pytester) -> None:
    """docs/testing.md's worked example (sync and trio) and README's snippet, as written."""
    files = _doc_examples()
    assert {"test_cart_sync", "test_cart_trio"} <= set(files)
    files["test_readme"] = _readme_example()
    _prepare(pytester, trio_mode=True, **files)
    pytester.makepyfile(cart=_doc_module("cart.py"))
    pytester.syspathinsert()
    result = _run(pytester, "-q")
    tests = sum(len(re.findall(r"^(?:async )?def test_", s, re.M)) for s in files.values())
    result.assert_outcomes(passed=tests)
    _assert_no_leaks(pytester)


def _doc_module(name: str) -> str:
    for block in re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S):
        if block.startswith(f"# {name}\n"):
            return str(block)
    raise AssertionError(f"docs/testing.md has no {name} block")
