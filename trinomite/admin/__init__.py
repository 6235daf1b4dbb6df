"""The admin/stats side of a node: HTTP paths, Prometheus text, the live WebSocket feed."""
