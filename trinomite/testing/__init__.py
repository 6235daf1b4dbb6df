"""Test and example tooling: in-process clusters and real datastore processes."""

from .cluster import Cluster as Cluster
from .cluster import ClusterNode as ClusterNode
from .cluster import open_cluster as open_cluster
from .redis_server import RedisServer as RedisServer
from .redis_server import free_port as free_port
from .redis_server import free_ports as free_ports
from .redis_server import redis_server as redis_server
from .thread import ThreadCluster as ThreadCluster
from .thread import run_in_thread as run_in_thread

__all__ = [
    "Cluster",
    "ClusterNode",
    "RedisServer",
    "free_port",
    "free_ports",
    "open_cluster",
    "redis_server",
]
