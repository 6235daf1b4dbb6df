"""Reply slots: how a reply produced by one task reaches the connection that asked.

Theory of operation
-------------------
A connection task (an inbound peer link) parses a batch of requests, hands
each one to a datastore or peer connection, and then waits once for the
whole batch::

    peer connection task             datastore reader task
    --------------------             ---------------------
    batch = Batch(n)
    conn.submit(raw, batch.slot(i)) ---> in-flight FIFO
    await batch.wait()                   reply framed -> slot.set(reply)
      (parked, no polling)               last slot filled -> wake the task
    write replies in request order

This is the one "result slot" pattern the style guide allows: both tasks
live in the node's nursery, and the slot is filled exactly once (a late
duplicate is ignored).  It avoids a task, a channel and an Event per
request, which is what keeps the per-request cost low.

Client connections are not tasks (see ``client``), so they use ``Gather``
instead of ``Batch``: the same counting, but the last reply triggers a
callback (the joined replies go to one sink) instead of waking a task.

If a waiting task is cancelled, or a client closes, its slots stay in the
connection FIFOs and are simply filled later and dropped; FIFO alignment
with the datastore is never disturbed.
"""

from __future__ import annotations

from typing import Protocol

import trio

__all__ = ["Batch", "Gather", "Parker", "ReplySink", "Slot", "SlotOwner"]


class ReplySink(Protocol):
    """Anything a connection can hand reply bytes to (a Slot, a quorum leg, ...)."""

    def set(self, reply: bytes) -> None: ...


class SlotOwner(Protocol):
    """What a slot reports to when it is filled."""

    def one_done(self) -> None: ...


class Slot:
    """Receives exactly one reply for one request."""

    __slots__ = ("batch", "reply")

    def __init__(self, batch: SlotOwner) -> None:
        self.batch = batch
        self.reply: bytes | None = None

    def set(self, reply: bytes) -> None:
        if self.reply is None:
            self.reply = reply
            self.batch.one_done()


class _Sleeper:
    """One task parked with ``wait_task_rescheduled`` until another wakes it."""

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None

    def _wake(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            trio.lowlevel.reschedule(task)

    async def _sleep(self) -> None:
        self._task = trio.lowlevel.current_task()

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


class Batch(_Sleeper):
    """Counts outstanding slots and wakes the waiting task when all are filled."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        super().__init__()
        self.pending = 0

    def slot(self) -> Slot:
        self.pending += 1
        return Slot(self)

    def one_done(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self._wake()

    async def wait(self) -> None:
        """Return once every slot handed out has been filled."""
        if self.pending == 0:
            await trio.lowlevel.checkpoint()
            return
        await self._sleep()


class Gather:
    """A batch's replies in request order, joined and handed to one sink when complete.

    Parts are added in request order: replies known at once with ``add``,
    replies to come with ``slot()``.  ``seal()`` ends the batch; the sink
    gets its one ``set`` call when the batch is sealed and every slot is
    filled, which may be inside ``seal()`` itself.
    """

    __slots__ = ("parts", "pending", "sealed", "sink")

    def __init__(self, sink: ReplySink) -> None:
        self.sink = sink
        self.parts: list[bytes | Slot] = []
        self.pending = 0
        self.sealed = False

    def add(self, reply: bytes) -> None:
        self.parts.append(reply)

    def slot(self) -> Slot:
        self.pending += 1
        slot = Slot(self)
        self.parts.append(slot)
        return slot

    def one_done(self) -> None:
        self.pending -= 1
        if self.pending == 0 and self.sealed:
            self._finish()

    def seal(self) -> None:
        self.sealed = True
        if self.pending == 0:
            self._finish()

    def _finish(self) -> None:
        parts = self.parts
        self.parts = []
        self.sink.set(b"".join([p if isinstance(p, bytes) else p.reply or b"" for p in parts]))


class Parker(_Sleeper):
    """Lets one service task sleep until another task has work for it.

    ``unpark()`` is cheap and idempotent, so hot paths can call it on every
    submission; a task that is already running is not disturbed.
    """

    __slots__ = ("pending",)

    def __init__(self) -> None:
        super().__init__()
        self.pending = False

    def unpark(self) -> None:
        self.pending = True
        self._wake()

    async def park(self) -> None:
        """Wait for the next ``unpark()`` (returns at once if one is pending)."""
        if self.pending:
            self.pending = False
            await trio.lowlevel.checkpoint()
            return
        await self._sleep()
        self.pending = False
