"""The node itself: the supervisor (``open_node``/``serve_node``) and its admin wiring."""

from .supervisor import ListenError as ListenError
from .supervisor import ListenSockets as ListenSockets
from .supervisor import Node as Node
from .supervisor import open_node as open_node
from .supervisor import serve_node as serve_node

__all__ = ["ListenError", "ListenSockets", "Node", "open_node", "serve_node"]
