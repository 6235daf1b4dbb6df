"""Hint records and the hint store, pure and with files: framing, torn tails, bounds, cursors."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from trinomite.hints.log import HEADER, Hint, HintReader, encode_hint
from trinomite.hints.replay import HintOnMiss, replay_batch, serve_replay
from trinomite.hints.store import HintStore
from trinomite.protocol.peer import MessageType
from trinomite.protocol.requests import encode_command

REQ = MessageType.REQ


def hint(i: int, created: float = 1000.0) -> Hint:
    return Hint(REQ, 0, created, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%d\r\n" % (len(str(i)), i))


def test_records_decode_from_any_chunking() -> None:
    log = b"".join(encode_hint(hint(i)) for i in range(5))
    for step in (1, 7, len(log)):
        reader = HintReader()
        out = []
        for at in range(0, len(log), step):
            reader.feed(log[at : at + step])
            out += list(reader.records())
        assert [h for h, _ in out] == [hint(i) for i in range(5)]
        assert out[-1][1] == len(log) == reader.valid


def test_a_torn_or_damaged_record_ends_the_valid_log() -> None:
    whole = encode_hint(hint(1)) + encode_hint(hint(2))
    torn = HintReader()
    torn.feed(whole[:-3])
    assert [h for h, _ in torn.records()] == [hint(1)]
    assert torn.valid == len(encode_hint(hint(1)))
    damaged = bytearray(whole)
    damaged[-1] ^= 0xFF
    reader = HintReader()
    reader.feed(bytes(damaged))
    assert [h for h, _ in reader.records()] == [hint(1)]
    assert reader.broken
    assert HEADER.size == 21


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "files"])
def test_add_replay_advance_and_start_over(tmp_path, on_disk: bool) -> None:
    store = HintStore(str(tmp_path) if on_disk else None)
    for i in range(10):
        assert store.add("peer:1", REQ, 0, hint(i).payload)
    assert store.peers["peer:1"].pending == 10
    first = store.next_hints("peer:1", 4)
    assert [h.payload for h, _ in first] == [hint(i).payload for i in range(4)]
    store.advance("peer:1", first[-1][1], replayed=4)
    assert store.next_hints("peer:1", 1)[0][0].payload == hint(4).payload
    rest = store.next_hints("peer:1", 100)
    store.advance("peer:1", rest[-1][1], replayed=len(rest))
    assert store.peers["peer:1"].pending == 0
    assert store.peers["peer:1"].log.size == 0  # all replayed: the log starts over
    assert store.bytes == 0
    assert store.totals()["hints_replayed"] == 10


def test_a_restart_keeps_unreplayed_hints_and_drops_a_torn_tail(tmp_path) -> None:
    store = HintStore(str(tmp_path))
    for i in range(6):
        store.add("10.0.0.2:8101", REQ, 0, hint(i).payload)
    done = store.next_hints("10.0.0.2:8101", 2)
    store.advance("10.0.0.2:8101", done[-1][1], replayed=2)
    store.sync()
    store.close()
    with open(tmp_path / "10.0.0.2%3A8101.hints", "ab") as log:
        log.write(encode_hint(hint(99))[:-5])  # a crash in the middle of a write
    again = HintStore(str(tmp_path))
    again.open_existing()
    assert again.peers["10.0.0.2:8101"].pending == 4
    payloads = [h.payload for h, _ in again.next_hints("10.0.0.2:8101", 100)]
    assert payloads == [hint(i).payload for i in range(2, 6)]
    size = os.path.getsize(tmp_path / "10.0.0.2%3A8101.hints")
    assert size == again.peers["10.0.0.2:8101"].log.size


def test_the_window_and_the_byte_cap_drop_and_count() -> None:
    now = [1000.0]
    store = HintStore(window=60.0, max_bytes=3 * len(encode_hint(hint(0))), clock=lambda: now[0])
    store.peer_down("p")
    assert store.add("p", REQ, 0, hint(0).payload)
    now[0] += 30  # a partition shorter than the window: still hinted
    assert store.add("p", REQ, 0, hint(1).payload)
    assert store.add("p", REQ, 0, hint(2).payload)
    assert not store.add("p", REQ, 0, hint(3).payload)  # the cap
    assert store.peers["p"].dropped == {"window": 0, "full": 1}
    now[0] += 31  # down longer than the window: no more hints
    assert not store.add("p", REQ, 0, hint(4).payload)
    assert store.peers["p"].dropped["window"] == 1
    # Hints older than the window are not replayed.
    assert store.expired(store.next_hints("p", 1)[0][0])
    store.peer_up("p")
    assert store.add("p", REQ, 0, b"*1\r\n$4\r\nPING\r\n") is False  # still full


async def test_hints_for_a_peer_no_longer_configured_are_kept_not_replayed(caplog) -> None:
    """A hints_dir from an older topology must not stop the replay of the others."""

    class Peers:
        def __init__(self) -> None:
            self.sent: list[tuple[str, bytes]] = []
            self.changed = trio.Event()

        def is_up(self, name: str) -> bool:
            if name == "gone:1":
                raise KeyError(name)
            return True

        def send(self, name, client_id, kind, payload, sink, deadline, flags=0) -> None:
            self.sent.append((name, payload))
            sink.set(b"+OK\r\n")

        async def wait_changed(self) -> None:
            await self.changed.wait()

    store = HintStore()
    store.add("gone:1", REQ, 0, hint(1).payload)
    store.add("here:2", REQ, 0, hint(2).payload)
    peers = Peers()
    with trio.move_on_after(2):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_replay, store, peers, 1000.0)
            while store.has_pending("here:2"):
                await trio.testing.wait_all_tasks_blocked(0.01)
            nursery.cancel_scope.cancel()
    assert peers.sent == [("here:2", hint(2).payload)]
    assert store.peers["gone:1"].pending == 1
    assert "not a peer any more" in caplog.text


def test_a_disk_that_fails_drops_and_counts_instead_of_raising(tmp_path) -> None:
    store = HintStore(str(tmp_path))
    assert store.add("p:1", REQ, 0, hint(1).payload)
    hints = store.peers["p:1"]

    def full(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    hints.log.append = full  # type: ignore[method-assign]
    assert store.add("p:1", REQ, 0, hint(2).payload) is False
    assert hints.dropped["full"] == 1
    assert store.disk_errors == 1
    assert hints.pending == 1


class ReplyingPeers:
    """A Sender that answers every request +OK at once and records what it got."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def is_up(self, name: str) -> bool:
        return True

    def send(self, name, client_id, kind, payload, sink, deadline, flags=0) -> None:
        self.sent.append(payload)
        sink.set(b"+OK\r\n")

    async def wait_changed(self) -> None:
        await trio.sleep_forever()


def request(*args: bytes) -> bytes:
    return encode_command(list(args))


async def test_a_live_overwrite_supersedes_older_hints_for_that_key_only() -> None:
    store = HintStore()
    store.add("p", REQ, 0, request(b"SET", b"k", b"old"))
    store.add("p", REQ, 0, request(b"SADD", b"s", b"m1"))
    store.add("p", REQ, 0, request(b"SET", b"j", b"kept"))
    # A quorum write's counted leg reaches p live while those hints wait.
    for raw, reply in [
        (request(b"SET", b"k", b"new"), b"+OK\r\n"),
        (request(b"SADD", b"s", b"m2"), b":1\r\n"),
        (request(b"SET", b"j", b"x", b"NX"), b"$-1\r\n"),  # not applied: supersedes nothing
    ]:
        HintOnMiss(store, "p", REQ, 0, raw, Swallow()).set(reply)
    store.add("p", REQ, 0, request(b"SET", b"k", b"newest"))  # a later miss: newer than live
    peers = ReplyingPeers()
    assert await replay_batch(store, peers, "p") == 4
    assert peers.sent == [
        request(b"SADD", b"s", b"m1"),  # sets accumulate: never skipped
        request(b"SET", b"j", b"kept"),
        request(b"SET", b"k", b"newest"),
    ]
    counts = store.peers["p"]
    assert (counts.replayed, counts.superseded, counts.pending) == (3, 1, 0)
    assert counts.overwritten == {}  # the log started over


class Swallow:
    def set(self, reply: bytes) -> None:
        pass
