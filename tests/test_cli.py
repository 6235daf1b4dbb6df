"""Tests of the ``trinomite`` command line and its logging set-up.

Most tests call ``cli.main(argv)`` in-process; a few run ``python -m
trinomite`` in a subprocess, including one that starts a real node on the
embedded datastore and stops it with SIGTERM.  Every wait is bounded.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import trio

from trinomite import cli
from trinomite._version import __version__
from trinomite.config import parse_config
from trinomite.logs import LEVELS, NOTICE, PVERB, VERB, LogControl, python_level
from trinomite.testing import free_ports

ROOT = Path(__file__).resolve().parent.parent
VALID = ROOT / "conf" / "embedded_single.yml"
INVALID_TEXT = "dyn_o_mite:\n  listen: 127.0.0.1:8102\n  servers:\n  - embedded:1\n  timeout: x\n"


@pytest.fixture
def invalid(tmp_path) -> Path:
    path = tmp_path / "invalid.yml"
    path.write_text(INVALID_TEXT)
    return path


def node_config_text() -> str:
    client, peer, stats = free_ports(3)  # one batch: three distinct ports
    return (
        "dyn_o_mite:\n"
        f"  listen: 127.0.0.1:{client}\n"
        f"  dyn_listen: 127.0.0.1:{peer}\n"
        f"  stats_listen: 127.0.0.1:{stats}\n"
        "  tokens: '0'\n"
        "  servers:\n"
        "  - embedded:1\n"
    )


def run_module(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trinomite", *args],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ---- informational flags --------------------------------------------------------


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(capsys, flag):
    assert cli.main([flag]) == 0
    assert capsys.readouterr().out == f"This is trinomite-{__version__}\n"


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(capsys, flag):
    assert cli.main([flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"This is trinomite-{__version__}\nusage: trinomite")
    for option in ("--test-conf", "--verbosity", "--output", "--conf-file", "--pid-file"):
        assert option in out


# ---- -t ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        ["-t", "{}"],
        ["-t", "-c", "{}"],
        ["--test-conf", "--conf-file", "{}"],
        ["-t", "-c", "{}", "{}"],
    ],
)
def test_test_conf_valid(capsys, form):
    argv = [str(VALID) if arg == "{}" else arg for arg in form]
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == f"trinomite: configuration file '{VALID}' syntax is valid\n"


def test_test_conf_invalid(capsys, invalid):
    assert cli.main(["-t", str(invalid)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"{invalid}:5:12: key 'timeout': found 'x', expected a whole number of milliseconds",
        f"trinomite: configuration file '{invalid}' syntax is invalid",
    ]


def test_test_conf_missing_file(capsys, tmp_path):
    missing = tmp_path / "missing.yml"
    assert cli.main(["-t", str(missing)]) == 1
    assert f"{missing}: cannot read the file" in capsys.readouterr().err


def test_default_conf_file(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli.main(["-t"]) == 0
    assert "'conf/dynomite.yml' syntax is valid" in capsys.readouterr().out


def test_test_conf_subprocess(invalid):
    valid = run_module("-t", "conf/embedded_single.yml")
    assert (valid.returncode, valid.stdout) == (
        0,
        "trinomite: configuration file 'conf/embedded_single.yml' syntax is valid\n",
    )
    bad = run_module("-t", str(invalid))
    assert bad.returncode == 1
    assert f"{invalid}:5:12: key 'timeout'" in bad.stderr
    assert "syntax is invalid" in bad.stderr


# ---- refusals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["-x", "1"], ["--bogus"], ["-v", "12"], ["-v", "loud"], ["-c", "a.yml", "b.yml"], ["a", "b"]],
)
def test_usage_errors_exit_1(capsys, argv):
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("trinomite: ")
    assert "usage: trinomite" in err


@pytest.mark.parametrize("flag", ["-d", "--daemonize"])
def test_daemonize_is_refused(capsys, flag):
    assert cli.main([flag, str(VALID)]) == 1
    assert "not supported" in capsys.readouterr().err
    assert "process supervisor" in cli._DAEMONIZE_REFUSED


def test_start_with_invalid_config_logs_and_exits_1(tmp_path, invalid):
    log = tmp_path / "trinomite.log"
    assert cli.main(["-o", str(log), str(invalid)]) == 1
    assert f"{invalid}:5:12: key 'timeout': found 'x'" in log.read_text()


def test_unopenable_log_file(capsys, tmp_path):
    assert cli.main(["-o", str(tmp_path / "no" / "such" / "dir.log"), "-t", str(VALID)]) == 1
    assert "cannot open log file" in capsys.readouterr().err


def test_unwritable_pid_file(tmp_path):
    log = tmp_path / "log"
    pid = tmp_path / "no" / "such" / "dir.pid"
    assert cli.main(["-o", str(log), "-p", str(pid), str(VALID)]) == 1
    assert "cannot write pid file" in log.read_text()


# ---- logging ----------------------------------------------------------------------


def test_levels_follow_dynomite_order():
    assert [name for name, _ in LEVELS] == [
        "EMERG",
        "ALERT",
        "CRIT",
        "ERR",
        "WARN",
        "NOTICE",
        "INFO",
        "DEBUG",
        "VERB",
        "VVERB",
        "VVVERB",
        "PVERB",
    ]
    levels = [python_level(v) for v in range(len(LEVELS))]
    assert levels == sorted(levels, reverse=True)
    assert python_level(5) == NOTICE == 25
    assert logging.INFO < NOTICE < logging.WARNING
    assert python_level(3) == logging.ERROR
    assert all(python_level(v) < logging.DEBUG for v in range(8, 12))
    assert len(set(levels[7:])) == 5
    assert (logging.getLevelName(NOTICE), logging.getLevelName(VERB)) == ("NOTICE", "VERB")
    assert python_level(99) == PVERB


def test_log_control_file_reopen_and_levels(tmp_path):
    path = tmp_path / "trinomite.log"
    logger = logging.getLogger("trinomite.test")
    before = logging.getLogger("trinomite").level
    with LogControl(4, str(path)) as log:
        logger.log(NOTICE, "hidden at WARN")
        logger.warning("first")
        path.rename(tmp_path / "rotated.log")
        log.reopen()
        logger.warning("second")
        for _ in range(20):
            log.louder()
        assert log.verbosity == 11
        assert logging.getLogger("trinomite").level == PVERB
        for _ in range(20):
            log.quieter()
        assert log.verbosity == 0
    assert logging.getLogger("trinomite").level == before
    rotated = (tmp_path / "rotated.log").read_text()
    assert "WARNING trinomite.test: first" in rotated
    assert "hidden" not in rotated
    assert "second" not in rotated
    fresh = path.read_text()
    assert "second" in fresh
    assert "log level set to 11 (PVERB)" in fresh


async def test_signals_drive_shutdown_and_logging(tmp_path):
    calls = []

    class RecordingAdmin:
        def reload_tls(self):
            calls.append("reload_tls")
            return ""

    class RecordingNode:
        admin = RecordingAdmin()

        async def shutdown(self):
            calls.append("shutdown")

        def stop(self):
            calls.append("stop")

    async def signals():
        yield signal.SIGHUP
        yield signal.SIGTTIN
        yield signal.SIGTTOU
        yield signal.SIGTERM  # logged at NOTICE, the verbosity at this point
        yield signal.SIGTTOU
        yield signal.SIGINT

    path = tmp_path / "trinomite.log"
    with LogControl(5, str(path)) as log:
        async with trio.open_nursery() as nursery:
            await cli._handle_signals(signals(), RecordingNode(), log, nursery)
        assert log.verbosity == 4
    assert sorted(calls) == ["reload_tls", "shutdown", "stop"]
    text = path.read_text()
    for line in ("reopened log file", "log level set to 6 (INFO)", "log level set to 4 (WARN)"):
        assert line in text
    assert "SIGTERM: shutting down gracefully" in text
    assert "SIGINT again: stopping now" in text


# ---- running a node ---------------------------------------------------------------


async def ping(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    async with stream:
        await stream.send_all(b"*1\r\n$4\r\nPING\r\n")
        return await stream.receive_some(64) == b"+PONG\r\n"


async def test_run_node_in_process_stops_on_sigterm(tmp_path):
    config = parse_config(node_config_text())
    port = config.listen.port
    with LogControl(5, str(tmp_path / "log")) as log, trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cli._run_node, config, log)
            for _ in range(500):
                if await ping(port):
                    break
                await trio.sleep(0.02)
            else:
                pytest.fail("the node never answered PING")
            # The signal receiver was opened before the node started listening.
            os.kill(os.getpid(), signal.SIGTERM)
    assert f"trinomite listening on 127.0.0.1:{port}" in (tmp_path / "log").read_text()
    assert not await ping(port)


@pytest.mark.slow
def test_subprocess_node_answers_ping_and_stops_on_sigterm(tmp_path):
    conf = tmp_path / "node.yml"
    conf.write_text(node_config_text())
    port = parse_config(conf.read_text()).listen.port
    log, pid = tmp_path / "trinomite.log", tmp_path / "trinomite.pid"
    process = subprocess.Popen(
        [sys.executable, "-m", "trinomite", "-o", str(log), "-p", str(pid), str(conf)],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    try:
        client = redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.fail(f"no PING reply (exit code {process.poll()}): {log.read_text()}")
        assert pid.read_text() == f"{process.pid}\n"
        client.close()
        # SIGHUP reopens the log file (rotation), then SIGTERM stops the node.
        log.rename(tmp_path / "rotated.log")
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    assert not pid.exists()
    assert f"trinomite listening on 127.0.0.1:{port}" in (tmp_path / "rotated.log").read_text()
    assert "SIGTERM: shutting down gracefully" in log.read_text()
    assert "trinomite stopped" in log.read_text()
