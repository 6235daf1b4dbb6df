"""The datastore side of a node: the pipelined pool, the embedded store, and the node-state gate."""
