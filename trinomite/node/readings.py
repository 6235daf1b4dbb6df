"""What /info, /metrics and the feed read off the process and the hint store.

Theory of operation
-------------------
Small readings taken when someone asks (``node.admin``): the process's
resident memory and open descriptors from ``/proc``, the Trio tasks alive
(walked from the root task: a leak shows as a count that keeps growing),
and the hint store's counts, in total and per peer, as zeros when hinted
handoff is off so that every node reports the same keys.
"""

from __future__ import annotations

import os
from typing import Any

import trio

from ..hints.store import HintStore

__all__ = [
    "hint_totals",
    "hints_per_peer",
    "open_fds",
    "peer_hint_row",
    "rss_bytes",
    "trio_tasks",
]


def rss_bytes() -> int:
    """The process's resident set size, in bytes (0 if unknown)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


_NO_HINTS = {
    "hints_pending": 0,
    "hints_stored": 0,
    "hints_replayed": 0,
    "hints_dropped": 0,
    "hints_rejected": 0,
    "hints_superseded": 0,
    "hints_bytes": 0,
}


def hint_totals(hints: HintStore | None) -> dict[str, int]:
    """The hint store's totals (zeros when hinted handoff is off)."""
    return hints.totals() if hints is not None else dict(_NO_HINTS)


def peer_hint_row(store: HintStore | None, name: str) -> dict[str, int]:
    """One peer's hint counts (zeros when it has none, or hinted handoff is off)."""
    hints = store.peers.get(name) if store is not None else None
    if hints is None:
        return {"hints_pending": 0, "hints_replayed": 0, "hints_dropped": 0, "hints_rejected": 0}
    return {
        "hints_pending": hints.pending,
        "hints_replayed": hints.replayed,
        "hints_dropped": sum(hints.dropped.values()),
        "hints_rejected": hints.rejected,
    }


def hints_per_peer(store: HintStore | None) -> dict[str, dict[str, Any]]:
    """``/info``'s ``hints`` section: every peer that ever had hints, with its counts."""
    if store is None:
        return {}
    return {
        name: {
            "pending": hints.pending,
            "stored": hints.stored,
            "replayed": hints.replayed,
            "dropped": dict(hints.dropped),
            "rejected": hints.rejected,
            "superseded": hints.superseded,
            "down_since": hints.down_since,
        }
        for name, hints in store.peers.items()
    }


def open_fds() -> int:
    """File descriptors the process has open (0 if unknown)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def trio_tasks() -> int:
    """Tasks alive in this Trio run (a leak shows as a count that keeps growing)."""
    count = 0
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count
