"""Reply slots: how a reply produced by one task reaches whoever asked for it.

Theory of operation
-------------------
A connection hands each request to a datastore or peer connection with a
*slot*; the task that reads the reply fills it, and the slot's owner is told
when all of its slots are filled::

    client or peer connection            datastore / peer reader task
    -------------------------            ----------------------------
    gather = Gather(sink)
    conn.submit(raw, gather.slot()) ---> in-flight FIFO
    gather.seal()                        reply framed -> slot.set(reply)
                                         last slot filled -> sink.set(all, in order)

Nothing waits in between: no task, channel or Event per request, which is
what keeps the per-request cost low.  A slot is filled exactly once (a late
duplicate is ignored).  ``Gather`` joins a client batch's replies for its
connection; the peer server's rounds count their slots the same way.

If a connection closes with slots outstanding, they stay in the connection
FIFOs and are filled later and dropped; FIFO alignment with the datastore
is never disturbed.

``Parker`` lets a service task (a link's writer, a state gate's expiry
loop) sleep until another task has work for it.
"""

from __future__ import annotations

import abc
from typing import Protocol

import trio

__all__ = ["Gather", "Parker", "PartsSink", "ReplySink", "Slot", "SlotGroup", "SlotOwner"]


class ReplySink(Protocol):
    """Anything a connection can hand reply bytes to (a Slot, a quorum leg, ...)."""

    def set(self, reply: bytes) -> None: ...


class PartsSink(abc.ABC):
    """The sink of a leg that carries several requests (``peering.batches``).

    ``set`` gets the leg's replies joined, or one error standing for all of
    them; a reader that has already split them calls ``set_parts`` instead
    (a datastore run), so they are not joined only to be split again.
    """

    __slots__ = ()

    @abc.abstractmethod
    def set(self, reply: bytes) -> None: ...

    @abc.abstractmethod
    def set_parts(self, parts: list[bytes]) -> None: ...


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


class SlotGroup(abc.ABC):
    """Counts a group's slots; ``completed()`` runs once it is sealed and all are filled."""

    __slots__ = ("pending", "sealed")

    def __init__(self) -> None:
        self.pending = 0
        self.sealed = False

    def new_slot(self) -> Slot:
        self.pending += 1
        return Slot(self)

    def one_done(self) -> None:
        self.pending -= 1
        if self.pending == 0 and self.sealed:
            self.completed()

    def seal(self) -> None:
        """No more slots will be added (``completed()`` may run right here)."""
        self.sealed = True
        if self.pending == 0:
            self.completed()

    @property
    def complete(self) -> bool:
        return self.sealed and self.pending == 0

    @abc.abstractmethod
    def completed(self) -> None:
        """Every slot is filled and the group is sealed (called once)."""


class Gather(SlotGroup):
    """A batch's replies in request order, joined and handed to one sink when complete.

    Parts are added in request order: replies known at once with ``add``,
    replies to come with ``slot()``.  The sink gets its one ``set`` call when
    the batch is sealed and every slot is filled.
    """

    __slots__ = ("parts", "sink")

    def __init__(self, sink: ReplySink) -> None:
        super().__init__()
        self.sink = sink
        self.parts: list[bytes | Slot] = []

    def add(self, reply: bytes) -> None:
        self.parts.append(reply)

    def slot(self) -> Slot:
        slot = self.new_slot()
        self.parts.append(slot)
        return slot

    def completed(self) -> None:
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
