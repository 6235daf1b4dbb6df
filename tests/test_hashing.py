"""Dynomite key hashes: every function against tokens Dynomite v0.8 computed.

Theory of operation: the vector file holds, per key, the uint32 token each of
Dynomite's 12 working hash functions gives the key's UTF-8 bytes.  Every
entry must match exactly; property tests add that any bytes hash to a uint32
without error, and slow bit-by-bit models check the shortcuts (crc16 via
``crc_hqx``, the 64-bit FNVs computed on 32 bits).
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trinomite.config import keys as config_keys
from trinomite.ring.hashing import (
    HASHES,
    NAMES,
    UNSUPPORTED,
    UnsupportedHash,
    fast_murmur,
    hash_key,
    lookup,
    murmur,
    tagged,
)

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
VECTORS = json.loads((SHARED / "vectors" / "dynomite_hashes.json").read_text(encoding="utf-8"))
CASES = [
    pytest.param(key, name, token, id=f"{name}-{key}")
    for key, tokens in VECTORS["hashes"].items()
    for name, token in tokens.items()
]
U32 = 0xFFFFFFFF


@pytest.mark.parametrize(("key", "name", "token"), CASES)
def test_dynomite_vector(key: str, name: str, token: int) -> None:
    assert hash_key(name, key.encode()) == token


@pytest.mark.parametrize(("key", "token"), [(k, t["murmur"]) for k, t in VECTORS["hashes"].items()])
def test_the_pure_murmur_fallback_matches_dynomite(key: str, token: int) -> None:
    assert murmur(key.encode()) == token


def test_the_compiled_murmur_is_the_one_routing() -> None:
    assert HASHES["murmur"] is fast_murmur
    assert fast_murmur is not murmur, "murmurhash2 is a dependency: routing must use it"


@given(st.binary(max_size=300))
def test_compiled_and_pure_murmur_agree(key: bytes) -> None:
    assert fast_murmur(key) == murmur(key)


def test_vectors_cover_every_supported_hash() -> None:
    covered = {name for tokens in VECTORS["hashes"].values() for name in tokens}
    assert covered == set(HASHES)
    assert set(HASHES) | set(UNSUPPORTED) == set(NAMES)
    assert not set(HASHES) & set(UNSUPPORTED)


def test_names_are_the_configs_choices() -> None:
    assert NAMES == config_keys.HASHES  # Dynomite's dyn_hashkit.h order


def owner(tokens: list[int], token: int) -> int:
    """Dynomite's rule: the first node token >= the key token, wrapping."""
    ordered = sorted(tokens)
    if token <= ordered[0] or token > ordered[-1]:
        return ordered[0]
    return ordered[bisect.bisect_left(ordered, token)]


def test_routing_example() -> None:
    example = VECTORS["routing_example"]
    for key, expected in example["owner_token_by_key"].items():
        assert owner(example["rack_tokens"], hash_key("murmur", key.encode())) == expected, key


@pytest.mark.parametrize(
    ("key", "tag", "hashed"),
    [
        (b"{user1}:cart", b"{}", b"user1"),
        (b"cart:{user1}", b"{}", b"user1"),
        (b"a{b}c{d}", b"{}", b"b"),  # the first open tag and the next close
        (b"a{b{c}d", b"{}", b"b{c"),  # a second open tag is just a byte
        (b"{}x", b"{}", b""),  # empty tag: keylen 0
        (b"a}b{c", b"{}", b"a}b{c"),  # no close after the open: whole key
        (b"abc{", b"{}", b"abc{"),
        (b"plain", b"{}", b"plain"),
        (b"{user1}", None, b"{user1}"),
        (b"{user1}", b"", b"{user1}"),
        (b"x-ab-y", b"--", b"ab"),  # same byte for open and close
        (b"x-ab", b"--", b"x-ab"),
    ],
)
def test_hash_tag(key: bytes, tag: bytes | None, hashed: bytes) -> None:
    assert tagged(key, tag) == hashed


def test_hash_tag_routes_tagged_keys_together() -> None:
    tokens = {hash_key("murmur", tagged(k, b"{}")) for k in (b"{u1}:a", b"{u1}:b", b"x{u1}")}
    assert tokens == {hash_key("murmur", b"u1")}


def test_murmur3_is_refused_with_a_reason() -> None:
    assert "murmur3" in NAMES
    assert "murmur3" not in HASHES
    for call in (lambda: lookup("murmur3"), lambda: hash_key("murmur3", b"foo")):
        with pytest.raises(UnsupportedHash, match=r"stub.*'murmur'"):
            call()


def test_unknown_hash_lists_the_choices() -> None:
    with pytest.raises(UnsupportedHash, match=r"unknown hash 'sha1'.*murmur"):
        lookup("sha1")
    assert issubclass(UnsupportedHash, ValueError)


def test_lookup_returns_the_table_entry() -> None:
    assert lookup("murmur") is HASHES["murmur"]


# -- slow reference models of the shortcuts ----------------------------------


def crc16_register(key: bytes) -> int:
    """Dynomite's loop: a uint32 register shifted left, CRC-16/XMODEM bitwise."""
    crc = 0
    for byte in key:
        entry = ((crc >> 8) ^ byte) & 0xFF
        entry <<= 8
        for _ in range(8):
            entry = ((entry << 1) ^ 0x1021) if entry & 0x8000 else entry << 1
        crc = ((crc << 8) ^ (entry & 0xFFFF)) & U32
    return crc


def fnv64(key: bytes, alternate: bool) -> int:
    h = 0xCBF29CE484222325
    for byte in key:
        if alternate:
            h = ((h ^ byte) * 0x100000001B3) & (2**64 - 1)
        else:
            h = ((h * 0x100000001B3) & (2**64 - 1)) ^ byte
    return h & U32


@given(st.binary(max_size=80))
def test_crc16_matches_the_register_model(key: bytes) -> None:
    assert HASHES["crc16"](key) == crc16_register(key)


@given(st.binary(max_size=80))
def test_fnv64_truncation_matches_64_bit_arithmetic(key: bytes) -> None:
    assert HASHES["fnv1_64"](key) == fnv64(key, alternate=False)
    # Dynomite's fnv1a_64 loops on 32 bits, which is the same thing.
    assert HASHES["fnv1a_64"](key) == fnv64(key, alternate=True)


@pytest.mark.parametrize("name", sorted(HASHES))
@given(key=st.binary(max_size=300))
def test_any_bytes_give_a_uint32(name: str, key: bytes) -> None:
    token = HASHES[name](key)
    assert type(token) is int
    assert 0 <= token <= U32


@pytest.mark.parametrize("name", sorted(HASHES))
def test_empty_key_is_defined(name: str) -> None:
    # Dynomite routes a zero-length key to peer 0 without hashing it.
    assert 0 <= HASHES[name](b"") <= U32
