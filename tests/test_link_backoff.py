"""Reconnect backoff of a link whose connections die as soon as they are made.

A peer (or a proxy in front of a stopped one) that accepts and then closes
every connection must not be redialled ten times a second with a warning
each time: the backoff starts over only after a connection stayed up for
``STABLE_AFTER``.  In-memory streams under the mock clock, so the virtual
seconds pass at once and nothing is slept on.
"""

from __future__ import annotations

import itertools
import logging

import pytest
import trio
import trio.testing

from trinomite.datastore.pool import DatastoreConnection
from trinomite.net.links import INITIAL_BACKOFF, STABLE_AFTER


def _link(connect: object, max_backoff: float = 10.0) -> DatastoreConnection:
    return DatastoreConnection(
        name="flaky",
        connect=connect,  # type: ignore[arg-type]
        protocol=2,
        timeout=1.0,
        max_backoff=max_backoff,
        max_bulk_len=1 << 20,
        preconnect=True,
        delimited=False,
    )


async def test_connections_that_die_at_once_back_off(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    dials: list[float] = []

    async def connect() -> trio.abc.Stream:
        dials.append(trio.current_time())
        ours, theirs = trio.testing.memory_stream_pair()
        await theirs.aclose()  # accepted, then closed at once
        return ours

    caplog.set_level(logging.DEBUG, "trinomite.links")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_link(connect).run)
        await trio.sleep(40)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(dials)]
    # 0.1, 0.2, 0.4 ... doubling up to the 10 s cap: about ten dials in 40 s, not 400.
    assert len(dials) <= 12, gaps
    assert gaps[:4] == pytest.approx([INITIAL_BACKOFF * 2**i for i in range(4)], abs=0.02)
    assert max(gaps) == pytest.approx(10.0, abs=0.05)
    lost = [r for r in caplog.records if "connection lost" in r.getMessage()]
    assert [r.levelno for r in lost].count(logging.WARNING) == 1


async def test_a_connection_that_stayed_up_resets_the_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dials: list[float] = []
    eight = trio.Event()

    async def connect() -> trio.abc.Stream:
        dials.append(trio.current_time())
        if len(dials) == 8:
            eight.set()
        ours, theirs = trio.testing.memory_stream_pair()
        lifetime = STABLE_AFTER * 2 if len(dials) == 6 else 0.0

        async def close_later() -> None:
            await trio.sleep(lifetime)
            await theirs.aclose()

        nursery.start_soon(close_later)
        return ours

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_link(connect).run)
        await eight.wait()
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(dials)]
    # Five short-lived connections double the wait; the sixth lived 2 s, so
    # the seventh dial comes INITIAL_BACKOFF after it was lost.
    assert gaps[5] == pytest.approx(STABLE_AFTER * 2 + INITIAL_BACKOFF, abs=0.02)
    assert gaps[6] == pytest.approx(INITIAL_BACKOFF * 2, abs=0.02)
