"""Connection plumbing every side of a node shares: sockets, reconnecting links, reply slots."""
