"""Dropping consumed bytes from a parser's receive buffer.

Theory of operation
-------------------
Every sans-IO parser here keeps one ``bytearray`` and offsets into it.
Deleting the consumed prefix after every parse would copy the buffer each
time; never deleting it would grow it without bound.  ``compact`` deletes it
only when the buffer is fully consumed (a cheap ``clear``) or when the prefix
is at least ``COMPACT_AT`` bytes (so copying is amortised O(n)).  It returns
how many bytes went, and the parser shifts its own offsets by that much.
"""

from __future__ import annotations

__all__ = ["COMPACT_AT", "compact"]

#: Compact once this many consumed bytes sit in front of the unparsed ones.
COMPACT_AT = 64 * 1024


def compact(buf: bytearray, start: int) -> int:
    """Drop ``buf[:start]`` when worth it; return the shift for every offset (0 if kept)."""
    if start == 0:
        return 0
    if start >= len(buf):
        buf.clear()
        return start
    if start >= COMPACT_AT:
        del buf[:start]
        return start
    return 0
