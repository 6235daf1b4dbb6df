"""Peering: outgoing peer links and pools, the peer listener, and the cluster coordinator."""
