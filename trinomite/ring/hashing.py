"""Dynomite's key hash functions, bit for bit, as one table of pure functions.

Theory of operation
-------------------
Dynomite routes a key by hashing it to a **uint32 token** and picking the
node whose token range holds it.  Two nodes agree on routing only if they
compute the same token, so every function here reproduces what Dynomite's
``src/hashkit/dyn_*.c`` computes on x86-64 (little-endian), including its
departures from the published algorithms.  They are checked against tokens
produced by Dynomite v0.8 itself (``shared/vectors/dynomite_hashes.json``)::

    tagged(b"{user1}:cart", b"{}") -> b"user1" -> hash_key("murmur", ...) -> token

This module is sans-IO and stateless: ``HASHES`` maps each supported
``hash`` name to a ``HashFn`` (bytes -> int in 0..2**32-1).  Resolve the
function once (``lookup``) and call it per request.

What Dynomite actually computes (read from its source)
------------------------------------------------------
- ``murmur`` (default): MurmurHash2 with seed ``0xdeadbeef * len`` (uint32)
  and ``h = seed ^ len``.  It is on every request's path, so ``HASHES``
  uses the compiled ``murmurhash2`` package when it is installed (0.37 us
  a call for a 16-byte key, timeit on this 2-core machine) and the pure
  function ``murmur`` otherwise (1.9 us for 16 bytes; 0.7-1.1 us for 3,
  4.3 us for 40: about 0.2 us per 4-byte word).  Both are tested against
  Dynomite's tokens and against each other.
- ``md5``: the first 4 digest bytes read little-endian.
- ``crc16``: the CRC-16/XMODEM table, but the register is a uint32 that is
  never cut to 16 bits: the token is the CRC in the low 16 bits plus the
  high CRC bytes of the two previous steps shifted above it, so tokens
  reach 2**32-1.  Computed here with ``binascii.crc_hqx`` three times.
- ``crc32``: libmemcached's variant: bits 16..30 of the standard CRC-32,
  so tokens are only 0..32767.  ``crc32a`` is the standard CRC-32 (zlib).
- ``fnv1_64`` is FNV-1 on 64 bits cut to the low 32 bits; ``fnv1a_64``
  does its whole loop on 32 bits with the 64-bit constants cut to 32 bits.
  Both equal a 32-bit FNV with basis ``0x84222325`` and prime ``0x1b3``
  (the low 32 bits of a 64-bit product depend only on the low 32 bits of
  its factors), which is how they are computed here.
- ``one_at_a_time`` reads the key through ``const char *``: bytes >= 0x80
  are sign-extended (0xE9 adds 0xFFFFFFE9).  Checked by the key ``été``.
- ``hsieh`` follows Dynomite's current source (unsigned bytes); twemproxy
  and older Dynomite sign-extend the last byte of a key whose length is
  3 mod 4, which no vector covers.  ``jenkins`` is lookup3 ``hashlittle``
  with initval 13.
- Empty keys: Dynomite never hashes one (a zero-length key, including an
  empty hash tag such as ``{}``, goes to peer index 0 without hashing),
  and its ``hsieh``/``jenkins`` return without setting a token.  Here
  every function is defined on ``b""``; the ring must special-case it.

``murmur3``
-----------
Dynomite accepts ``hash: murmur3`` but its ``hash_murmur3`` is a stub: the
MurmurHash3 call is commented out and the token is left unset, so such a
cluster routes on garbage and there is no behaviour to be compatible with.
Trinomite does not guess: ``murmur3`` is in ``UNSUPPORTED`` with the reason,
and ``lookup``/``hash_key`` raise ``UnsupportedHash`` suggesting ``murmur``.
"""

from __future__ import annotations

import binascii
import hashlib
import struct
import zlib
from collections.abc import Callable

__all__ = [
    "HASHES",
    "NAMES",
    "UNSUPPORTED",
    "HashFn",
    "UnsupportedHash",
    "fast_murmur",
    "hash_key",
    "lookup",
    "murmur",
    "tagged",
]

HashFn = Callable[[bytes], int]

_MASK = 0xFFFFFFFF


_UNPACK32 = [struct.Struct(f"<{n}I").unpack_from for n in range(64)]


def _words(key: bytes, count: int) -> tuple[int, ...]:
    """The first ``count`` little-endian uint32 words of ``key``."""
    if count < len(_UNPACK32):
        return _UNPACK32[count](key)
    return struct.unpack_from(f"<{count}I", key)


# -- murmur (MurmurHash2, Dynomite seed) ---------------------------------------

_M = 0x5BD1E995


def murmur(key: bytes) -> int:
    """Dynomite's ``murmur``: MurmurHash2, seed ``0xdeadbeef * len``."""
    n = len(key)
    h = ((0xDEADBEEF * n) ^ n) & _MASK
    count = n >> 2
    if count:
        for k in _words(key, count):
            k = (k * _M) & _MASK
            h = ((h * _M) ^ ((k ^ (k >> 24)) * _M)) & _MASK
    if n & 3:
        h = ((h ^ int.from_bytes(key[count << 2 :], "little")) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


try:
    from murmurhash2 import murmurhash2 as _murmurhash2
except ImportError:  # pragma: no cover - the package is a dependency
    _murmurhash2 = None  # type: ignore[assignment]


def _compiled_murmur(key: bytes) -> int:
    """``murmur`` through the compiled ``murmurhash2`` package (same tokens)."""
    assert _murmurhash2 is not None
    return int(_murmurhash2(key, (0xDEADBEEF * len(key)) & _MASK))


#: The murmur that ``HASHES`` routes with: compiled if available.
fast_murmur: HashFn = _compiled_murmur if _murmurhash2 is not None else murmur


# -- library-backed ----------------------------------------------------------


def md5(key: bytes) -> int:
    """First four MD5 digest bytes, little-endian."""
    return int.from_bytes(hashlib.md5(key, usedforsecurity=False).digest()[:4], "little")


def crc16(key: bytes) -> int:
    """CRC-16/XMODEM whose uint32 register keeps the bytes shifted out of it.

    Each step is ``crc = (crc << 8) ^ table[...]`` on a uint32, and the table
    index only reads bits 8..15, so the low 16 bits are the plain CRC-16 and
    bits 16..31 hold the high bytes of the CRC one and two steps earlier.
    """
    crc2 = binascii.crc_hqx(key[:-2], 0)  # slices are b"" for short keys: CRC 0
    crc1 = binascii.crc_hqx(key[-2:-1], crc2)
    crc0 = binascii.crc_hqx(key[-1:], crc1)
    return ((crc2 & 0xFF00) << 16) | ((crc1 & 0xFF00) << 8) | crc0


def crc32(key: bytes) -> int:
    """libmemcached's "CRC-32": bits 16..30 of the standard CRC-32."""
    return (zlib.crc32(key) >> 16) & 0x7FFF


def crc32a(key: bytes) -> int:
    """The standard CRC-32 (as zlib)."""
    return zlib.crc32(key)


# -- FNV ---------------------------------------------------------------------

_FNV32_BASIS, _FNV32_PRIME = 0x811C9DC5, 0x01000193
# The 64-bit constants cut to 32 bits (see module docstring).
_FNV64_BASIS_LO, _FNV64_PRIME_LO = 0x84222325, 0x1B3


def _fnv1(basis: int, prime: int) -> HashFn:
    def fnv1(key: bytes) -> int:
        h = basis
        for byte in key:
            h = ((h * prime) & _MASK) ^ byte
        return h

    return fnv1


def _fnv1a(basis: int, prime: int) -> HashFn:
    def fnv1a(key: bytes) -> int:
        h = basis
        for byte in key:
            h = ((h ^ byte) * prime) & _MASK
        return h

    return fnv1a


fnv1_32 = _fnv1(_FNV32_BASIS, _FNV32_PRIME)
fnv1a_32 = _fnv1a(_FNV32_BASIS, _FNV32_PRIME)
fnv1_64 = _fnv1(_FNV64_BASIS_LO, _FNV64_PRIME_LO)
fnv1a_64 = _fnv1a(_FNV64_BASIS_LO, _FNV64_PRIME_LO)

# -- Bob Jenkins -------------------------------------------------------------

#: ``(uint32_t)(char)b``: what a signed-char byte adds to a uint32.
_SIGNED_BYTE = tuple(b | 0xFFFFFF00 if b & 0x80 else b for b in range(256))


def one_at_a_time(key: bytes) -> int:
    """Jenkins one-at-a-time over *signed* chars, as Dynomite reads them."""
    h = 0
    for byte in key:
        h = (h + _SIGNED_BYTE[byte]) & _MASK
        h = (h + (h << 10)) & _MASK
        h ^= h >> 6
    h = (h + (h << 3)) & _MASK
    h ^= h >> 11
    return (h + (h << 15)) & _MASK


def _rot(x: int, k: int) -> int:
    return ((x << k) & _MASK) | (x >> (32 - k))


#: lookup3's mix() is this six-line round twice, with these rotations.
_MIX_ROTATIONS = ((4, 6, 8), (16, 19, 4))


def jenkins(key: bytes) -> int:
    """lookup3 ``hashlittle`` with initval 13 (the reads Dynomite does on x86)."""
    n = len(key)
    a = b = c = (0xDEADBEEF + n + 13) & _MASK
    if not n:
        return c
    # Zero-padding the last block equals lookup3's masked / byte-wise tail reads.
    padded = key + bytes(-n % 12)
    w = _words(padded, len(padded) >> 2)
    for i in range(0, len(w) - 3, 3):
        a = (a + w[i]) & _MASK
        b = (b + w[i + 1]) & _MASK
        c = (c + w[i + 2]) & _MASK
        for ra, rb, rc in _MIX_ROTATIONS:  # mix(a, b, c)
            a = ((a - c) & _MASK) ^ _rot(c, ra)
            c = (c + b) & _MASK
            b = ((b - a) & _MASK) ^ _rot(a, rb)
            a = (a + c) & _MASK
            c = ((c - b) & _MASK) ^ _rot(b, rc)
            b = (b + a) & _MASK
    a = (a + w[-3]) & _MASK
    b = (b + w[-2]) & _MASK
    c = (c + w[-1]) & _MASK
    # final(a, b, c)
    c = ((c ^ b) - _rot(b, 14)) & _MASK
    a = ((a ^ c) - _rot(c, 11)) & _MASK
    b = ((b ^ a) - _rot(a, 25)) & _MASK
    c = ((c ^ b) - _rot(b, 16)) & _MASK
    a = ((a ^ c) - _rot(c, 4)) & _MASK
    b = ((b ^ a) - _rot(a, 14)) & _MASK
    return ((c ^ b) - _rot(b, 24)) & _MASK


# -- Paul Hsieh's SuperFastHash ----------------------------------------------


def hsieh(key: bytes) -> int:
    """SuperFastHash over 16-bit little-endian halves; ``b""`` gives 0."""
    n = len(key)
    if not n:
        return 0
    halves = struct.unpack_from(f"<{n >> 1}H", key)
    h = 0
    for i in range(0, (n >> 2) << 1, 2):
        h = (h + halves[i]) & _MASK
        h = ((h << 16) ^ (halves[i + 1] << 11) ^ h) & _MASK
        h = (h + (h >> 11)) & _MASK
    rem = n & 3
    if rem == 3:
        h = (h + halves[-1]) & _MASK
        h ^= (h << 16) & _MASK
        h ^= (key[-1] << 18) & _MASK
        h = (h + (h >> 11)) & _MASK
    elif rem == 2:
        h = (h + halves[-1]) & _MASK
        h ^= (h << 11) & _MASK
        h = (h + (h >> 17)) & _MASK
    elif rem == 1:
        h = (h + key[-1]) & _MASK
        h ^= (h << 10) & _MASK
        h = (h + (h >> 1)) & _MASK
    # Final avalanche.
    h ^= (h << 3) & _MASK
    h = (h + (h >> 5)) & _MASK
    h ^= (h << 4) & _MASK
    h = (h + (h >> 17)) & _MASK
    h ^= (h << 25) & _MASK
    return (h + (h >> 6)) & _MASK


# -- the table ---------------------------------------------------------------

#: The names trinomite computes, each exactly as Dynomite does.
HASHES: dict[str, HashFn] = {
    "one_at_a_time": one_at_a_time,
    "md5": md5,
    "crc16": crc16,
    "crc32": crc32,
    "crc32a": crc32a,
    "fnv1_64": fnv1_64,
    "fnv1a_64": fnv1a_64,
    "fnv1_32": fnv1_32,
    "fnv1a_32": fnv1a_32,
    "hsieh": hsieh,
    "murmur": fast_murmur,
    "jenkins": jenkins,
}

#: Names Dynomite accepts that trinomite refuses, with the reason.
UNSUPPORTED: dict[str, str] = {
    "murmur3": (
        "hash 'murmur3' is a stub in Dynomite (it never computes a token, so "
        "such a cluster routes keys arbitrarily); use 'murmur', Dynomite's default"
    ),
}


#: Every ``hash`` name Dynomite's config accepts, in ``dyn_hashkit.h`` order.
NAMES: tuple[str, ...] = (*HASHES, *UNSUPPORTED)


class UnsupportedHash(ValueError):
    """A ``hash`` name trinomite cannot compute the way Dynomite does."""


def lookup(name: str) -> HashFn:
    """The function for ``name``; resolve once, then call per key."""
    try:
        return HASHES[name]
    except KeyError:
        reason = UNSUPPORTED.get(name) or f"unknown hash {name!r}; one of {', '.join(HASHES)}"
        raise UnsupportedHash(reason) from None


def hash_key(name: str, key: bytes) -> int:
    """The uint32 token Dynomite's ``name`` hash gives ``key``."""
    return lookup(name)(key)


def tagged(key: bytes, hash_tag: bytes | None) -> bytes:
    """The part of ``key`` that is hashed under ``hash_tag`` (Dynomite's rule).

    With a two-byte tag such as ``b"{}"``: if ``key`` has ``tag[0]`` and,
    after its first occurrence, ``tag[1]``, only the bytes between them are
    hashed (possibly none: ``b"{}x"`` gives ``b""``).  Otherwise, and
    without a tag, the whole key is.
    """
    if not hash_tag:
        return key
    start = key.find(hash_tag[0])
    if start < 0:
        return key
    end = key.find(hash_tag[1], start + 1)
    if end < 0:
        return key
    return key[start + 1 : end]
