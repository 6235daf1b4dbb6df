"""Start and stop real ``memcached`` processes on ephemeral loopback ports.

Theory of operation
-------------------
The twin of ``testing.redis_server`` for ``data_store: 1``, on the same
``servers.ServerProcess``: memcached runs TCP only (no UDP), one thread, and
is ready once it answers ``version``.  ``stop()`` kills it like a crash
(memcached keeps nothing: a restarted one is empty) and ``start()`` brings
it back on the same port.  A start that fails says what memcached printed.

Test and example tooling, not part of a node.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

from .servers import ServerProcess

__all__ = ["MISSING_MEMCACHED", "MemcachedServer", "memcached_server"]

MISSING_MEMCACHED = (
    "memcached is not installed or not on PATH: install it (Debian/Ubuntu: "
    "apt-get install memcached; Fedora: dnf install memcached; macOS: brew install memcached)"
)


class MemcachedServer(ServerProcess):
    """One memcached process; ``start()``/``stop()`` may be repeated."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | None = None,
        options: list[str] | None = None,
    ) -> None:
        found = shutil.which(binary or "memcached")
        if found is None:
            if binary is not None:
                raise FileNotFoundError(f"memcached binary {binary!r} not found")
            raise FileNotFoundError(MISSING_MEMCACHED)
        super().__init__(found, host, port)
        #: Extra command-line options (``["-I", "2m"]``).
        self.options = list(options or [])

    def _argv(self) -> list[str]:
        argv = [self.binary, "-l", self.host, "-p", str(self.port), "-U", "0", "-t", "1"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            argv += ["-u", "root"]  # memcached refuses to run as root otherwise
        return [*argv, *self.options]

    def _popen_options(self) -> dict[str, Any]:
        return {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"version\r\n")
                return sock.recv(64).startswith(b"VERSION ")
        except OSError:
            return False

    def _why(self) -> str:
        process = self._process
        if process is None or process.poll() is None or process.stderr is None:
            return ": still starting"
        return ": " + (process.stderr.read().decode(errors="replace").strip() or "(no output)")


@contextlib.contextmanager
def memcached_server(host: str = "127.0.0.1") -> Iterator[MemcachedServer]:
    """A running memcached for the duration of the block."""
    server = MemcachedServer(host)
    try:
        server.start()
        yield server
    finally:
        server.close()
