"""The client side of a node: the one-task epoll reactor, request dispatch, local commands."""
