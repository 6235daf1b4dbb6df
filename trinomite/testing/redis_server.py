"""Start and stop real ``redis-server`` processes on ephemeral loopback ports.

Theory of operation
-------------------
Tests and examples need real datastores, never fixed ports.  The port,
the start retried elsewhere if the port was taken, kill and restart on the
same port and the cleanup at exit are ``servers.ServerProcess``'s; this
module adds redis-server's options (persistence off) and its readiness
check (it answers PING), so a test can kill a datastore and bring it back
at the same address to check that a node reconnects by itself.

The server logs to a file in its own temporary directory; a start that
fails says why with that log's last lines.

This module spawns processes with ``subprocess`` and polls with short,
bounded waits; it is test and example tooling, not part of a node.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator

from .servers import ServerProcess, free_port, free_ports

__all__ = ["MISSING_REDIS", "RedisServer", "free_port", "free_ports", "redis_server"]

MISSING_REDIS = (
    "redis-server is not installed or not on PATH: install it (Debian/Ubuntu: "
    "apt-get install redis-server; Fedora: dnf install redis; macOS: brew install "
    "redis) or name the binary (pytest: --trinomite-redis-exec / trinomite_redis_exec)"
)
#: Log lines a failed start shows.
LOG_TAIL = 20


class RedisServer(ServerProcess):
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
        super().__init__(found, host, port)
        self._dir = tempfile.mkdtemp(prefix="trinomite-redis-")

    def _argv(self) -> list[str]:
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
        return [
            self.binary,
            *(arg for name, value in options.items() for arg in (f"--{name}", value)),
        ]

    def _answers(self) -> bool:
        """Whether it answers PING (a password-protected one says NOAUTH)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def _why(self) -> str:
        return f"; its log ends:\n{self.log_tail()}"

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
