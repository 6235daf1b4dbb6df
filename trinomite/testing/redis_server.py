"""Start and stop real ``redis-server`` processes on ephemeral loopback ports.

Theory of operation
-------------------
Tests and examples need real datastores, never fixed ports.  A port is
chosen by binding a socket to ``127.0.0.1:0`` and releasing it; the server
is started on it with persistence off and waited for (bounded) until it
answers PING.  If another process grabbed the port in between, the start is
retried on a fresh port, unless the port was given or the server already
ran there (others were told that address: it then fails instead of
moving).  ``stop()`` and ``start()`` keep the port, so a
test can kill a datastore and bring it back at the same address to check
that a node reconnects by itself.

The server logs to a file in its own temporary directory; a start that
fails says why with that log's last lines.  Every server still running when
the interpreter exits is killed (``atexit``), so even a harness that never
reached its cleanup leaves no redis-server behind.

This module spawns processes with ``subprocess`` and polls with short,
bounded waits; it is test and example tooling, not part of a node.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterator

__all__ = ["MISSING_REDIS", "RedisServer", "free_port", "free_ports", "redis_server"]

MISSING_REDIS = (
    "redis-server is not installed or not on PATH: install it (Debian/Ubuntu: "
    "apt-get install redis-server; Fedora: dnf install redis; macOS: brew install "
    "redis) or name the binary (pytest: --trinomite-redis-exec / trinomite_redis_exec)"
)
#: Log lines a failed start shows.
LOG_TAIL = 20
_running: weakref.WeakSet[RedisServer] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_running):
        server.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that were free a moment ago.

    All the sockets stay bound until every port is chosen, so the kernel
    cannot hand the same ephemeral port out twice.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _answers_ping(host: str, port: int) -> bool:
    """Whether a server answers there (a password-protected one says NOAUTH)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServer:
    """One redis-server process; ``start()``/``stop()`` may be repeated."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | None = None,
        options: dict[str, str] | None = None,
    ) -> None:
        #: Extra ``--name value`` options (``{"requirepass": "secret"}``).
        self.options = dict(options or {})
        found = shutil.which(binary or "redis-server")
        if found is None:
            if binary is not None:
                raise FileNotFoundError(f"redis-server binary {binary!r} not found")
            raise FileNotFoundError(MISSING_REDIS)
        self.binary = found
        self.host = host
        self.port = port or free_port(host)
        #: False once others may know the address: the port must not move.
        self._may_move = port is None
        self._dir = tempfile.mkdtemp(prefix="trinomite-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (on the same port as before) and wait until it answers."""
        for _attempt in range(3):
            options = {
                "port": str(self.port),
                "bind": self.host,
                "save": "",
                "appendonly": "no",
                "dir": self._dir,
                "daemonize": "no",
                "protected-mode": "no",
                "logfile": self.log_path,
                **self.options,
            }
            self._process = subprocess.Popen(
                [
                    self.binary,
                    *(arg for name, value in options.items() for arg in (f"--{name}", value)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _running.add(self)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break  # exited: most likely the port was taken
                if _answers_ping(self.host, self.port):
                    self._may_move = False
                    return
                time.sleep(0.02)
            self.stop()
            if not self._may_move:
                break
            self.port = free_port(self.host)
        raise RuntimeError(
            f"{self.binary} did not start on {self.address} within {timeout:g}s; "
            f"its log ends:\n{self.log_tail()}"
        )

    @property
    def log_path(self) -> str:
        return os.path.join(self._dir, "redis.log")

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        """The last lines of the server's log ('(empty)' if it wrote none)."""
        try:
            with open(self.log_path, errors="replace") as log:
                tail = log.readlines()[-lines:]
        except OSError:
            tail = []
        return "".join(tail).rstrip() or "(empty)"

    def stop(self) -> None:
        """Kill the server (SIGKILL: like a crash) and wait for it to exit."""
        process, self._process = self._process, None
        _running.discard(self)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@contextlib.contextmanager
def redis_server(host: str = "127.0.0.1") -> Iterator[RedisServer]:
    """A running redis-server for the duration of the block."""
    server = RedisServer(host)
    try:
        server.start()
        yield server
    finally:
        server.close()
