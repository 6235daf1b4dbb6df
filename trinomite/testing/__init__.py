"""Test and example tooling: in-process clusters, real datastore processes, faults.

``open_cluster`` (Trio) and ``run_in_thread`` (sync code) start whole
topologies; the pytest plugin (``trinomite.testing.plugin``, loaded by
pytest through its ``pytest11`` entry point) wraps them as fixtures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# Eager: light (stdlib only), and ``redis_server`` and ``memcached_server`` are
# also submodules' names, which the import system would otherwise bind here
# once those modules load.
from .memcached_server import MemcachedServer as MemcachedServer
from .memcached_server import memcached_server as memcached_server
from .redis_server import RedisServer as RedisServer
from .redis_server import free_port as free_port
from .redis_server import free_ports as free_ports
from .redis_server import redis_server as redis_server

if TYPE_CHECKING:
    from .cluster import Cluster as Cluster
    from .cluster import ClusterNode as ClusterNode
    from .cluster import open_cluster as open_cluster
    from .faultproxy import FaultProxy as FaultProxy
    from .faultproxy import serve_fault_proxy as serve_fault_proxy
    from .startup import ClusterStartError as ClusterStartError
    from .thread import ThreadCluster as ThreadCluster
    from .thread import run_in_thread as run_in_thread
    from .trioredis import TrioRedis as TrioRedis

#: Public name -> the module defining it, imported on first use (PEP 562), so that
#: importing the package (pytest loads its plugin at every start) costs little.
_EXPORTS = {
    "Cluster": ".cluster",
    "ClusterNode": ".cluster",
    "open_cluster": ".cluster",
    "FaultProxy": ".faultproxy",
    "serve_fault_proxy": ".faultproxy",
    "ClusterStartError": ".startup",
    "ThreadCluster": ".thread",
    "run_in_thread": ".thread",
    "TrioRedis": ".trioredis",
}

__all__ = [
    "Cluster",
    "ClusterNode",
    "ClusterStartError",
    "FaultProxy",
    "MemcachedServer",
    "RedisServer",
    "ThreadCluster",
    "TrioRedis",
    "free_port",
    "free_ports",
    "memcached_server",
    "open_cluster",
    "redis_server",
    "run_in_thread",
    "serve_fault_proxy",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
