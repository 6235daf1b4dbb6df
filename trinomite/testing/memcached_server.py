"""Start and stop real ``memcached`` processes on ephemeral loopback ports.

Theory of operation
-------------------
The twin of ``testing.redis_server`` for ``data_store: 1``: a port is chosen
by binding ``127.0.0.1:0`` and releasing it, memcached is started there
(TCP only, no UDP) and waited for, bounded, until it answers ``version``.
A start that loses its port to another process moves to a fresh one unless
the port was given or already told to others.  ``stop()`` kills it like a
crash (memcached keeps nothing: a restarted one is empty) and ``start()``
brings it back on the same port.  Every server still running when the
interpreter exits is killed.

Test and example tooling, not part of a node: it spawns processes with
``subprocess`` and polls with short, bounded waits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import time
import weakref
from collections.abc import Iterator

from .redis_server import free_port

__all__ = ["MISSING_MEMCACHED", "MemcachedServer", "memcached_server"]

MISSING_MEMCACHED = (
    "memcached is not installed or not on PATH: install it (Debian/Ubuntu: "
    "apt-get install memcached; Fedora: dnf install memcached; macOS: brew install memcached)"
)
_running: weakref.WeakSet[MemcachedServer] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_running):
        server.stop()


def _answers_version(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"version\r\n")
            return sock.recv(64).startswith(b"VERSION ")
    except OSError:
        return False


class MemcachedServer:
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
        self.binary = found
        #: Extra command-line options (``["-I", "2m"]``).
        self.options = list(options or [])
        self.host = host
        self.port = port or free_port(host)
        self._may_move = port is None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start memcached (on the same port as before) and wait until it answers."""
        for _attempt in range(3):
            args = [self.binary, "-l", self.host, "-p", str(self.port), "-U", "0", "-t", "1"]
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                args += ["-u", "root"]  # memcached refuses to run as root otherwise
            self._process = subprocess.Popen(
                [*args, *self.options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            _running.add(self)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break  # exited: most likely the port was taken
                if _answers_version(self.host, self.port):
                    self._may_move = False
                    return
                time.sleep(0.02)
            error = self._error_output()
            self.stop()
            if not self._may_move:
                break
            self.port = free_port(self.host)
        raise RuntimeError(
            f"{self.binary} did not start on {self.address} within {timeout:g}s: {error}"
        )

    def _error_output(self) -> str:
        process = self._process
        if process is None or process.poll() is None or process.stderr is None:
            return "(still starting)"
        return process.stderr.read().decode(errors="replace").strip() or "(no output)"

    def stop(self) -> None:
        """Kill memcached (SIGKILL: like a crash; its items are gone) and wait for it."""
        process, self._process = self._process, None
        _running.discard(self)
        if process is not None:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            if process.stderr is not None:
                process.stderr.close()

    def close(self) -> None:
        self.stop()


@contextlib.contextmanager
def memcached_server(host: str = "127.0.0.1") -> Iterator[MemcachedServer]:
    """A running memcached for the duration of the block."""
    server = MemcachedServer(host)
    try:
        server.start()
        yield server
    finally:
        server.close()
