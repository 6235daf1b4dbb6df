"""A datastore process on an ephemeral loopback port: the part every server shares.

Theory of operation
-------------------
``ServerProcess`` chooses a port by binding ``host:0`` and releasing it,
starts the server there (``_argv``), and waits, bounded, until it answers
(``_answers``).  If another process grabbed the port in between, the start
moves to a fresh port, unless the port was given or the server already ran
there (others were told that address: the start then fails instead).
``stop()`` kills it like a crash and ``start()`` brings it back on the same
port.  Every server still running when the interpreter exits is killed
(``atexit``).  ``RedisServer`` and ``MemcachedServer`` are the two kinds.

Test and example tooling, not part of a node: it spawns processes with
``subprocess`` and polls with short, bounded waits.
"""

from __future__ import annotations

import abc
import atexit
import socket
import subprocess
import time
import weakref
from typing import Any

__all__ = ["ServerProcess", "free_port", "free_ports"]

_running: weakref.WeakSet[ServerProcess] = weakref.WeakSet()


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


class ServerProcess(abc.ABC):
    """One server process; ``start()``/``stop()`` may be repeated (see the module doc)."""

    def __init__(self, binary: str, host: str, port: int | None) -> None:
        self.binary = binary
        self.host = host
        self.port = port or free_port(host)
        #: False once others may know the address: the port must not move.
        self._may_move = port is None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @abc.abstractmethod
    def _argv(self) -> list[str]:
        """The command line that starts the server on ``self.port``."""

    @abc.abstractmethod
    def _answers(self) -> bool:
        """Whether the server answers on ``self.port`` yet."""

    def _why(self) -> str:
        """What a failed start says about the server's own output."""
        return ""

    def _popen_options(self) -> dict[str, Any]:
        return {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (on the same port as before) and wait until it answers."""
        why = ""
        for _attempt in range(3):
            self._process = subprocess.Popen(self._argv(), **self._popen_options())
            _running.add(self)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break  # exited: most likely the port was taken
                if self._answers():
                    self._may_move = False
                    return
                time.sleep(0.02)
            why = self._why()
            self.stop()
            if not self._may_move:
                break
            self.port = free_port(self.host)
        raise RuntimeError(
            f"{self.binary} did not start on {self.address} within {timeout:g}s{why}"
        )

    def stop(self) -> None:
        """Kill the server (SIGKILL: like a crash) and wait for it to exit."""
        process, self._process = self._process, None
        _running.discard(self)
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()

    def close(self) -> None:
        self.stop()
