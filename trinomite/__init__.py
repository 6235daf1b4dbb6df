"""trinomite: a Dynamo-style replication layer for Redis, compatible with Netflix Dynomite.

Public API (re-exports only)::

    async with trinomite.open_node(config) as node: ...
    await nursery.start(trinomite.serve_node, config)
    config = trinomite.load_config("node.yml")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._version import __version__ as __version__

if TYPE_CHECKING:
    from .config import ConfigError as ConfigError
    from .config import load_config as load_config
    from .config import parse_config as parse_config
    from .config.model import Consistency as Consistency
    from .config.model import DatastoreSpec as DatastoreSpec
    from .config.model import HostPort as HostPort
    from .config.model import NodeConfig as NodeConfig
    from .config.model import UnixPath as UnixPath
    from .node import ListenError as ListenError
    from .node import ListenSockets as ListenSockets
    from .node import Node as Node
    from .node import open_node as open_node
    from .node import serve_node as serve_node

#: Public name -> the module defining it, imported on first use (PEP 562), so that
#: importing the package (pytest loads its plugin at every start) costs little.
_EXPORTS = {
    "ConfigError": ".config",
    "load_config": ".config",
    "parse_config": ".config",
    "Consistency": ".config.model",
    "DatastoreSpec": ".config.model",
    "HostPort": ".config.model",
    "NodeConfig": ".config.model",
    "UnixPath": ".config.model",
    "ListenError": ".node",
    "ListenSockets": ".node",
    "Node": ".node",
    "open_node": ".node",
    "serve_node": ".node",
}

__all__ = [
    "ConfigError",
    "Consistency",
    "DatastoreSpec",
    "HostPort",
    "ListenError",
    "ListenSockets",
    "Node",
    "NodeConfig",
    "UnixPath",
    "__version__",
    "load_config",
    "open_node",
    "parse_config",
    "serve_node",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
