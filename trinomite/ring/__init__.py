"""Token ring: Dynomite-compatible key hashing and token ownership."""
