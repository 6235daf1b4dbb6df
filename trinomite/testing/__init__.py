"""Test and example tooling: real datastore processes for harnesses (not used by nodes)."""

from .redis_server import RedisServer as RedisServer
from .redis_server import free_port as free_port
from .redis_server import free_ports as free_ports
from .redis_server import redis_server as redis_server

__all__ = ["RedisServer", "free_port", "free_ports", "redis_server"]
