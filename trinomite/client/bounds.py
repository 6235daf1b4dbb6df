"""Bounds on client connections: timeouts, an output cap and a node-wide memory budget.

Theory of operation
-------------------
Each connection's parser already bounds one request (bulk, multibulk and
inline limits) and the reactor bounds one round per client.  What those do
not bound is time and the sum over clients.  ``ClientBounds`` holds the
four knobs, and the reactor applies them:

* ``client_read_timeout``: a request whose first byte arrived but whose
  last has not, for this long, closes the connection (slowloris: a byte
  every few seconds never completes a request, and resets no clock).
* ``client_idle_timeout`` (off by default, as Redis's ``timeout 0``): a
  connection with nothing in flight, nothing owed and nothing buffered for
  this long is closed.
* ``client_output_buffer_limit``: a client whose unsent replies exceed this
  (it pipelines and does not read) is disconnected at once, as Redis's hard
  ``client-output-buffer-limit``.
* ``client_memory_budget``: the bytes every client connection holds (input
  not parsed into requests yet, plus replies not yet sent), summed over the
  node, as Redis 7's ``maxmemory-clients``.  Past it, the connections
  holding the most are disconnected, biggest first, until the sum is back
  under the budget; well-behaved clients, who hold little, are untouched.

Every connection reports what it holds (``held``) after each step, so the
sum is kept incrementally.  Timeouts are checked by one sweep every
``sweep_interval`` seconds over all connections (O(clients) per sweep, no
timer per client).  ``offenders`` is the pure choice of whom to disconnect.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

import attrs

from ..config.model import NodeConfig

__all__ = ["ClientBounds", "Holder", "offenders"]

MIB = 1024 * 1024


class Holder(Protocol):
    @property
    def held(self) -> int: ...


H = TypeVar("H", bound=Holder)


@attrs.frozen
class ClientBounds:
    """The knobs, in seconds and bytes; 0 turns one off."""

    read_timeout: float = 30.0
    idle_timeout: float = 0.0
    output_limit: int = 64 * MIB
    memory_budget: int = 512 * MIB

    @classmethod
    def from_config(cls, config: NodeConfig) -> ClientBounds:
        return cls(
            read_timeout=config.client_read_timeout / 1000,
            idle_timeout=config.client_idle_timeout / 1000,
            output_limit=config.client_output_buffer_limit,
            memory_budget=config.client_memory_budget,
        )

    @property
    def sweep_interval(self) -> float:
        """How often timeouts are checked: a quarter of the shortest, at most every second."""
        timeouts = [t for t in (self.read_timeout, self.idle_timeout) if t > 0]
        return min(max(min(timeouts, default=4.0) / 4, 0.01), 1.0)


def offenders(connections: Iterable[H], excess: int) -> list[H]:
    """The fewest connections, biggest first, whose holdings cover ``excess`` bytes."""
    chosen: list[H] = []
    freed = 0
    for connection in sorted(connections, key=lambda c: c.held, reverse=True):
        if freed >= excess or connection.held == 0:
            break
        chosen.append(connection)
        freed += connection.held
    return chosen
