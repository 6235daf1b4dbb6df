"""redis-py from a Trio test: every command awaited, run in a worker thread.

Theory of operation
-------------------
redis-py's ``Redis`` blocks, and ``redis.asyncio`` needs asyncio.  In a
Trio test whose nodes run in the test's own loop, a blocking call would
stall the loop that has to answer it.  ``TrioRedis(client)`` wraps a
redis-py client so that each command method becomes awaitable and runs
through ``trio.to_thread.run_sync``::

    r = TrioRedis(node.client())
    await r.set("k", "v")
    assert await r.get("k") == b"v"

Anything that is not a method (``r.connection_pool``) is the client's own;
``r.sync`` is the plain client (for pipelines: ``await
trio.to_thread.run_sync(lambda: r.sync.pipeline().set(...).execute())``).
One worker thread runs at a time per call; redis-py's connection pool makes
concurrent calls from several Trio tasks safe.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from redis import Redis

__all__ = ["TrioRedis", "awaitable"]


class TrioRedis:
    """A redis-py client whose commands are awaited (see the module doc)."""

    def __init__(self, client: Redis) -> None:
        self.sync = client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.sync, name)
        if not callable(attribute):
            return attribute

        return functools.wraps(attribute)(awaitable(attribute))

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self.sync.close)

    def __repr__(self) -> str:
        return f"TrioRedis({self.sync!r})"


def awaitable(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``fn`` run in a worker thread, as a coroutine function."""

    async def call(*args: Any, **kwargs: Any) -> Any:
        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    return call
