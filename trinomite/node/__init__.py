"""The Trio shell of a node: supervisor, client handling and the datastore pool."""

from .supervisor import ListenSockets as ListenSockets
from .supervisor import Node as Node
from .supervisor import open_node as open_node
from .supervisor import serve_node as serve_node

__all__ = ["ListenSockets", "Node", "open_node", "serve_node"]
