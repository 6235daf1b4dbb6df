"""The ``trinomite`` command: Dynomite's command line, running a node on Trio.

Theory of operation
-------------------
::

    main(argv)
      |- parse Dynomite's flags (-h -V -t -d -v -o -c -p, plus a positional CONF)
      |- informational modes: -h, -V print and exit 0
      |- -d: refused, exit 1 (use a process supervisor)
      |- LogControl(-v, -o): the trinomite logger's level and output
      |- load_config(CONF): a ConfigError exits 1
      |- -t: report "syntax is valid", exit 0
      `- write -p pid file; trio.run(_run_node) until SIGINT/SIGTERM; exit 0

``_run_node`` opens the signal receiver first (so no signal is lost during
start-up), starts ``serve_node`` with ``nursery.start`` and then handles
signals: SIGINT/SIGTERM start a graceful ``Node.shutdown()`` (a second one
stops the node at once), SIGHUP reopens the ``-o`` log file and reloads
the TLS certificates and keys (``TlsState.reload``), and
SIGTTIN/SIGTTOU raise/lower the verbosity, as in Dynomite.  When
``serve_node`` returns, the wrapper cancels the signal handler and
``trio.run`` returns.

Exit codes: 0 after a signal-driven stop, ``-t`` success, ``-h`` and ``-V``;
1 for usage errors, configuration errors, and a node that failed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import NoReturn

import trio

from trinomite._version import __version__
from trinomite.config import ConfigError, NodeConfig, load_config
from trinomite.logs import DEFAULT_VERBOSITY, LEVELS, NOTICE, LogControl
from trinomite.node import Node, serve_node

__all__ = ["DEFAULT_CONF", "main"]

_log = logging.getLogger("trinomite.cli")

DEFAULT_CONF = "conf/dynomite.yml"

_DAEMONIZE_REFUSED = (
    "trinomite: -d/--daemonize is not supported: run trinomite in the foreground "
    "under a process supervisor (systemd, runit, supervisord, a container runtime)"
)

_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
#: Signals that adjust logging, as in Dynomite's ``dyn_signal.c``.
_LOG_SIGNALS: dict[int, Callable[[LogControl], None]] = {
    signal.SIGHUP: LogControl.reopen,
    signal.SIGTTIN: LogControl.louder,
    signal.SIGTTOU: LogControl.quieter,
}


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _verbosity(text: str) -> int:
    if not text.isdigit() or int(text) >= len(LEVELS):
        raise argparse.ArgumentTypeError(f"expected 0..{len(LEVELS) - 1}, got {text!r}")
    return int(text)


def _build_parser() -> _Parser:
    levels = ", ".join(f"{number} {name}" for number, (name, _) in enumerate(LEVELS))
    parser = _Parser(
        prog="trinomite",
        add_help=False,
        description="A Dynomite-compatible replication proxy for Redis.",
    )
    add = parser.add_argument
    add("-h", "--help", action="store_true", help="show this help and exit")
    add("-V", "--version", action="store_true", help="show the version and exit")
    add("-t", "--test-conf", action="store_true", help="test the configuration and exit")
    add("-D", "--describe-stats", action="store_true", help="describe every stat and exit")
    add("-d", "--daemonize", action="store_true", help="not supported: use a process supervisor")
    add(
        "-v",
        "--verbosity",
        type=_verbosity,
        default=DEFAULT_VERBOSITY,
        metavar="N",
        help=f"log level ({levels}); default {DEFAULT_VERBOSITY}",
    )
    add("-o", "--output", metavar="FILE", help="log file (default stderr; SIGHUP reopens it)")
    add("-c", "--conf-file", metavar="FILE", help=f"configuration file (default {DEFAULT_CONF})")
    add("-p", "--pid-file", metavar="FILE", help="write the process id here, removed on exit")
    add("conf", nargs="?", metavar="CONF", help="configuration file, as -c")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``trinomite`` command with ``argv`` (default ``sys.argv[1:]``).

    Returns the process exit code; never calls ``sys.exit``.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["status"]:  # the `trinomite status` subcommand: its own flags
        from trinomite import status

        return status.main(argv[1:])
    if argv[:1] == ["certs"]:  # `trinomite certs ...`: make CAs, certificates, keys
        from trinomite.tls import command

        return command.main(argv[1:])
    parser = _build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        conf = _conf_path(args.conf_file, args.conf)
    except _UsageError as exc:
        print(f"trinomite: {exc}", file=sys.stderr)
        print(parser.format_usage(), end="", file=sys.stderr)
        return 1

    # ---- Informational modes: print and exit, without reading the config ----
    # -D/--describe-stats and the `trinomite status` subcommand (dispatched on
    # argv[0] before the flags are parsed) belong in this section.
    if args.help:
        print(f"This is trinomite-{__version__}")
        print(parser.format_help(), end="")
        return 0
    if args.version:
        print(f"This is trinomite-{__version__}")
        return 0
    if args.describe_stats:
        from trinomite.stats.metrics import describe

        print(f"This is trinomite-{__version__}\n")
        print(describe(), end="")
        return 0
    # ---- End of informational modes ----

    if args.daemonize:
        print(_DAEMONIZE_REFUSED, file=sys.stderr)
        return 1
    try:
        log = LogControl(args.verbosity, args.output)
    except OSError as exc:
        print(f"trinomite: cannot open log file '{args.output}': {exc.strerror}", file=sys.stderr)
        return 1
    with log:
        if args.test_conf:
            return _test_conf(conf)
        return _run(conf, args.pid_file, log)


def _conf_path(option: str | None, positional: str | None) -> str:
    if option is not None and positional is not None and option != positional:
        raise _UsageError("give the configuration file once, with -c or as CONF")
    return option or positional or DEFAULT_CONF


def _test_conf(path: str) -> int:
    """``-t``: validate, print the verdict the way Dynomite does."""
    try:
        load_config(path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        print(f"trinomite: configuration file '{path}' syntax is invalid", file=sys.stderr)
        return 1
    print(f"trinomite: configuration file '{path}' syntax is valid")
    return 0


def _run(path: str, pid_file: str | None, log: LogControl) -> int:
    """Load the config and run a node until it is stopped by a signal."""
    try:
        config = load_config(path)
    except ConfigError as err:
        _log.error("%s", err)
        return 1
    if pid_file is not None:
        try:
            with open(pid_file, "w", encoding="ascii") as file:
                file.write(f"{os.getpid()}\n")
        except OSError as exc:
            _log.error("cannot write pid file '%s': %s", pid_file, exc.strerror)
            return 1
    try:
        trio.run(_run_node, config, log)
    except Exception as exc:
        for leaf in _leaves(exc):
            _log.error("node failed: %s", leaf)
            _log.debug("traceback of the failure", exc_info=leaf)
        return 1
    finally:
        if pid_file is not None:
            _remove(pid_file)
    _log.log(NOTICE, "trinomite stopped")
    return 0


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


# ---- the Trio part ---------------------------------------------------------


async def _run_node(config: NodeConfig, log: LogControl) -> None:
    with trio.open_signal_receiver(*_STOP_SIGNALS, *_LOG_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            node: Node = await nursery.start(_serve_then_cancel, config, nursery.cancel_scope)
            _log.log(NOTICE, "trinomite listening on %s", node.client_address)
            nursery.start_soon(_handle_signals, signals, node, log, nursery)


async def _serve_then_cancel(
    config: NodeConfig,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the node; once it has returned, cancel ``scope`` (the signal handler)."""
    await serve_node(config, task_status=task_status)
    scope.cancel()


async def _handle_signals(
    signals: AsyncIterator[int],
    node: Node,
    log: LogControl,
    nursery: trio.Nursery,
) -> None:
    stopping = False
    async for signum in signals:
        name = signal.Signals(signum).name
        if signum not in _STOP_SIGNALS:
            _LOG_SIGNALS[signum](log)
            if signum == signal.SIGHUP:  # and reload certificates, keeping live links
                node.admin.reload_tls()
        elif stopping:
            _log.warning("%s again: stopping now, without waiting for requests in flight", name)
            node.stop()
        else:
            _log.log(NOTICE, "%s: shutting down gracefully", name)
            stopping = True
            nursery.start_soon(node.shutdown)
