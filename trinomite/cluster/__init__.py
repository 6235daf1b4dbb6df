"""Pure cluster logic: routing plans and quorum decisions (no I/O, no trio)."""
