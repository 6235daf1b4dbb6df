"""Whom one gossip round talks to.

Theory of operation
-------------------
Each round (``GossipState.tick``) sends a SYN to every name
``round_targets`` returns, at most once each:

* ``fanout`` random live peers, by default ``auto_fanout(n)`` =
  ceil(log2(n) / 2) for n known nodes (1 up to 4 nodes, 3 up to 64, 5 up
  to 1024).  Cassandra talks to one peer a round, but with a relayed
  heartbeat that is too slow for a conviction bound of a few intervals: in
  a 48-node simulation with 10% loss (detector cap I/4 then), 1 peer a
  round left 5% of the gaps between heartbeat arrivals over 4.6 s (over
  4000 false convictions in two simulated minutes); 3 peers a round left
  none.
* up to ``MAX_PROBES`` (2) suspects: live members silent for over half
  their conviction time, most silent first.  A SYN to a suspect makes it
  answer with its own fresh record, so a node that is merely late is not
  convicted.
* a random DOWN member with probability down/(live+1), so that healed
  partitions reconnect, and a random seed if there is no live peer, or else
  with probability seeds/known when the round's first peer is not a seed
  (both as Cassandra does).

Pure code: the randomness is the caller's ``random.Random``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from .detector import FailureDetector

__all__ = ["MAX_FANOUT", "MAX_PROBES", "auto_fanout", "round_targets"]

MAX_FANOUT = 8
#: Most suspects probed directly in one round.
MAX_PROBES = 2


def auto_fanout(members: int) -> int:
    """Random live peers per round for a view of ``members`` nodes: ceil(log2(n) / 2).

    1 up to 4 nodes, 2 up to 16, 3 up to 64, 4 up to 256, 5 up to 1024.
    One peer a round (Cassandra's choice) spreads a heartbeat too slowly
    for the detector's 3.7-interval bound once the cluster passes about a
    dozen nodes: see the module docstring.
    """
    return max(1, min(MAX_FANOUT, math.ceil(math.log2(max(members, 1)) / 2)))


def round_targets(
    live: list[str],
    down: list[str],
    seeds: Sequence[str],
    detector: FailureDetector,
    rng: random.Random,
    fanout: int | None,
    now: float,
) -> list[str]:
    """The names this round's SYNs go to, each once (see the module doc)."""
    count = fanout or auto_fanout(len(live) + len(down) + 1)
    targets: list[str] = rng.sample(live, min(count, len(live)))
    # Probe suspects directly: a live member silent for over half its
    # conviction time answers our SYN with its own fresh record first.
    suspects = [n for n in live if detector.phi(n, now) >= detector.threshold / 2]
    suspects.sort(key=detector.last_arrival)
    targets.extend([n for n in suspects if n not in targets][:MAX_PROBES])
    if down and rng.random() < len(down) / (len(live) + 1):
        targets.append(rng.choice(down))
    wanted = not targets or targets[0] not in seeds or len(live) < len(seeds)
    if (seeds and wanted) and (not live or rng.random() < len(seeds) / (len(live) + len(down))):
        targets.append(rng.choice(seeds))
    return list(dict.fromkeys(targets))
