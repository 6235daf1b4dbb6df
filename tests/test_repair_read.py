"""The repair decision of one quorum read (``peering.repairs.RepairRead``), as pure logic.

Replies are the RESP arrays a replica's read script returns; the host is a
recorder standing in for the coordinator (it only counts and collects the
repair writes the decision asks for).
"""

from __future__ import annotations

from typing import Any

from trinomite.cluster.repair import READS
from trinomite.cluster.routing import Target
from trinomite.cluster.versions import Reading, collectable
from trinomite.peering.repairs import RepairRead
from trinomite.protocol.peer import MessageType
from trinomite.protocol.requests import parse_one
from trinomite.ring.topology import PeerInfo


class Host:
    def __init__(self, now: float = 1000.0, grace: int = 10_000) -> None:
        self.now = now
        self.grace = grace
        self.repairs: list[tuple[str, list[bytes]]] = []
        self.failed = 0
        self.seen: list[int] = []

    def repaired(self) -> None:
        pass

    def no_quorum(self) -> None:
        self.failed += 1

    def observe(self, version: int) -> None:
        self.seen.append(version)

    def outlived(self, tombstone: Reading) -> bool:
        return collectable(tombstone, self.now, self.grace / 1000)

    def send_repair(self, session: Any, target: Target, raw: bytes, now: float) -> None:
        args = parse_one(raw)
        assert args is not None
        self.repairs.append((target.peer.name, args[-4:]))


class Session:
    protocol = 2


class Sink:
    def __init__(self) -> None:
        self.replies: list[bytes] = []

    def set(self, reply: bytes) -> None:
        self.replies.append(reply)


def target(name: str, dc: str = "dc1") -> Target:
    peer = PeerInfo(name=name, host="127.0.0.1", port=1, dc=dc, rack=name, tokens=(0,))
    return Target(peer, MessageType.REQ, True, dc)


def value(data: bytes | None, version: int) -> bytes:
    body = b"$-1\r\n" if data is None else b"$%d\r\n%s\r\n" % (len(data), data)
    meta = b"1:%020d:0" % version if version else None
    tail = b"$-1\r\n" if meta is None else b"$%d\r\n%s\r\n" % (len(meta), meta)
    return b"*2\r\n" + body + tail


def read(host: Host, targets: list[Target], per_dc: bool = False) -> tuple[RepairRead, Sink]:
    sink = Sink()
    args = [b"GET", b"k"]
    return RepairRead(host, Session(), READS["get"], args, targets, sink, 0.0, per_dc=per_dc), sink


def test_the_newest_of_a_quorum_answers_and_the_stale_one_is_repaired() -> None:
    host = Host()
    decision, sink = read(host, [target("a"), target("b"), target("c")])
    decision.add(0, value(b"old", 5))
    assert sink.replies == []
    decision.add(1, value(b"new", 9))
    assert sink.replies == [b"$3\r\nnew\r\n"]
    assert host.seen == [9]
    assert [name for name, _ in host.repairs] == ["a"]
    assert host.repairs[0][1][-1] == b"new"
    decision.add(2, value(b"old", 5))  # late and stale: repaired too
    assert [name for name, _ in host.repairs] == ["a", "c"]


def test_each_datacenter_needs_its_own_quorum() -> None:
    host = Host()
    targets = [target("a1"), target("a2"), target("a3"), target("b1", "dc2"), target("b2", "dc2")]
    decision, sink = read(host, targets, per_dc=True)
    decision.add(0, value(b"v", 3))
    decision.add(1, value(b"v", 3))  # dc1 has its quorum, dc2 none yet
    assert sink.replies == []
    decision.add(3, value(b"v", 3))
    assert sink.replies == []  # dc2 needs 2 of 2
    decision.add(4, value(b"w", 4))
    assert sink.replies == [b"$1\r\nw\r\n"]
    assert sorted(name for name, _ in host.repairs) == ["a1", "a2", "b1"]


def test_errors_that_leave_one_datacenter_short_fail_the_read() -> None:
    host = Host()
    targets = [target("a1"), target("a2"), target("a3"), target("b1", "dc2"), target("b2", "dc2")]
    decision, sink = read(host, targets, per_dc=True)
    decision.add(0, value(b"v", 3))
    decision.add(3, b"-ERR down\r\n")  # dc2 can no longer reach 2 of 2
    assert sink.replies == [b"-ERR down\r\n"]
    assert host.failed == 1
    decision.add(1, value(b"v", 3))
    assert len(sink.replies) == 1
    assert host.repairs == []


def test_a_tombstone_older_than_the_grace_is_not_written_back() -> None:
    old = 1 << 16  # stamped at wall millisecond 1, long before ``now``
    host = Host(now=1000.0, grace=10_000)
    decision, sink = read(host, [target("a"), target("b"), target("c")])
    tombstone = b"*2\r\n$-1\r\n$24\r\n1:%020d:1\r\n" % old
    decision.add(0, tombstone)
    decision.add(1, b"*2\r\n$-1\r\n$-1\r\n")  # collected: holds nothing
    assert sink.replies == [b"$-1\r\n"]
    assert host.repairs == []
    young = Host(now=0.001, grace=10_000)
    decision, sink = read(young, [target("a"), target("b"), target("c")])
    decision.add(0, tombstone)
    decision.add(1, b"*2\r\n$-1\r\n$-1\r\n")
    assert [name for name, _ in young.repairs] == ["b"]  # young: the tombstone is copied
