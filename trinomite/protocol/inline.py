"""Splitting of inline commands (``SET k v\\r\\n`` typed into telnet).

Theory of operation
-------------------
Redis accepts a request as one text line as well as a RESP multibulk.  The
line is split like Redis's ``sdssplitargs``: whitespace separates
arguments, ``"double quotes"`` allow ``\\n``, ``\\xHH`` and friends,
``'single quotes'`` allow ``\\'``.  Pure function, no state.
"""

from __future__ import annotations

__all__ = ["split_inline"]

_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}
_HEX = frozenset(b"0123456789abcdefABCDEF")
_SPACE = frozenset(b" \n\r\t\v\f\0")


def split_inline(line: bytes) -> list[bytes] | None:
    """Split an inline command line as Redis's ``sdssplitargs`` does.

    Supports ``"double quoted"`` strings with ``\\n``, ``\\xHH`` and friends,
    and ``'single quoted'`` strings with ``\\'``.  Returns None for unbalanced
    quotes (or a closing quote not followed by a space).
    """
    if b'"' not in line and b"'" not in line:
        return line.split()
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return args
        current = bytearray()
        quote = 0
        while True:
            if i >= n:
                if quote:
                    return None
                break
            c = line[i]
            if quote == 0x22:  # inside "..."
                if (
                    c == 0x5C
                    and i + 3 < n
                    and line[i + 1] == 0x78
                    and (line[i + 2] in _HEX and line[i + 3] in _HEX)
                ):
                    current.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 0x5C and i + 1 < n:
                    i += 1
                    current += _ESCAPES.get(line[i], bytes((line[i],)))
                elif c == 0x22:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                else:
                    current.append(c)
            elif quote == 0x27:  # inside '...'
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    i += 1
                    current.append(0x27)
                elif c == 0x27:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                else:
                    current.append(c)
            elif c in _SPACE:
                break
            elif c in (0x22, 0x27):
                quote = c
            else:
                current.append(c)
            i += 1
        args.append(bytes(current))
