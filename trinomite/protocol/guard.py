"""Commands that would let any client change or read the datastore's own server state.

Theory of operation
-------------------
A node forwards a client's commands over connections it shares with every
other client, to a datastore the operator runs.  A few forwardable Redis
commands act on that *server* rather than on keys: ``REPLICAOF`` would make
it a replica of a server the client runs (detaching it from the cluster or
replacing its data), ``CONFIG SET`` changes its settings, ``SCRIPT KILL``
kills another client's script, and ``CONFIG GET`` and ``INFO`` reveal its
paths, port, process id and passwords.  ``GUARDED`` is the closed table of
them, each with the reason a client is told::

    -NOPERM trinomite does not forward 'replicaof': it would make the datastore
     a replica of another server (detaching it or replacing its data); an
     operator may allow it with allowed_commands: [replicaof]

``CommandGuard(allowed)`` applies it, for the names the operator allowed
(``allowed_commands``) forwarding unchanged:

* ``refusal(name, args)`` -> the error for a guarded request, or None;
* ``CONFIG GET`` is allowed for the harmless parameters in ``SAFE_CONFIG``
  (what redis-benchmark asks: ``save``, ``appendonly``) given by name, not
  by pattern;
* ``INFO`` is forwarded and ``redact_info`` drops the lines naming the
  datastore's process, executable, config file, port and replication peers
  from its reply.

Pure code: no I/O, no trio.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import replies as r

__all__ = ["GUARDED", "REDACTED_INFO_FIELDS", "SAFE_CONFIG", "CommandGuard", "redact_info"]

_REPLICA = (
    "it would make the datastore a replica of another server (detaching it or replacing its data)"
)

#: Guarded command (or "command subcommand") -> why a client may not run it.
GUARDED: dict[str, str] = {
    "replicaof": _REPLICA,
    "slaveof": _REPLICA,
    "config set": "it changes the datastore's server settings for every client",
    "config rewrite": "it rewrites the datastore's configuration file",
    "config resetstat": "it resets the datastore's statistics",
    "config get": "it reveals the datastore's server settings (paths, ports, passwords)",
    "script kill": "it kills a script that another client is running",
    "info": "",  # never refused: its reply is redacted (see redact_info)
}

#: CONFIG GET parameters any client may read (given literally, not as patterns).
SAFE_CONFIG = frozenset(
    {
        "save",
        "appendonly",
        "databases",
        "maxmemory",
        "maxmemory-policy",
        "proto-max-bulk-len",
        "lua-time-limit",
        "busy-reply-threshold",
    }
)

#: INFO fields dropped from the datastore's reply (plus slaveN and listenerN lines).
REDACTED_INFO_FIELDS = frozenset(
    {
        b"process_id",
        b"process_supervised",
        b"run_id",
        b"tcp_port",
        b"executable",
        b"config_file",
        b"master_host",
        b"master_port",
        b"master_replid",
        b"master_replid2",
    }
)
_NUMBERED_INFO_FIELDS = (b"slave", b"listener")


class CommandGuard:
    """``GUARDED`` minus what the operator allowed."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        allowed = {name.lower() for name in allowed}
        unknown = allowed - GUARDED.keys()
        if unknown:
            raise ValueError(f"not guarded commands: {', '.join(sorted(unknown))}")
        self.allowed = frozenset(allowed)
        self.redact = "info" not in self.allowed

    def refusal(self, name: str, args: list[bytes]) -> bytes | None:
        """The error for a guarded request (``name``: its table name), None to forward it."""
        guarded = name
        if name in ("config", "script"):
            guarded = f"{name} {args[1].decode('latin-1').lower()}"
            if guarded not in GUARDED:
                return None
        if guarded in self.allowed or not GUARDED.get(guarded):
            return None
        if guarded == "config get" and all(
            arg.decode("latin-1").lower() in SAFE_CONFIG for arg in args[2:]
        ):
            return None
        return r.error(
            f"NOPERM trinomite does not forward '{guarded}': {GUARDED[guarded]}; an operator "
            f"may allow it with allowed_commands: [{guarded}]"
        )


def _redacted(line: bytes) -> bool:
    field = line.partition(b":")[0]
    if field in REDACTED_INFO_FIELDS:
        return True
    return any(
        field.startswith(prefix) and field[len(prefix) :].isdigit()
        for prefix in _NUMBERED_INFO_FIELDS
    )


def redact_info(reply: bytes) -> bytes:
    """An INFO reply (RESP2 bulk or RESP3 verbatim string) without the redacted lines."""
    kind = reply[:1]
    if kind not in (b"$", b"="):
        return reply  # an error, or a null: nothing to hide
    header, sep, rest = reply.partition(b"\r\n")
    if not sep or not header[1:].isdigit():
        return reply
    body = rest[: int(header[1:])]
    prefix = b""
    if kind == b"=":
        prefix, body = body[:4], body[4:]  # "txt:"
    kept = b"\r\n".join(line for line in body.split(b"\r\n") if not _redacted(line))
    kept = prefix + kept
    return kind + str(len(kept)).encode() + b"\r\n" + kept + b"\r\n"
