"""Commands the node answers itself, without a datastore round trip.

Theory of operation
-------------------
Connection-level commands describe the client's connection to *trinomite*,
not to any one datastore, so forwarding them would be wrong (CLIENT
SETNAME on a shared datastore connection would rename every client) or
misleading (HELLO would report the datastore's protocol, not the client's).
They are answered here from the ``Session`` and the command table:

    PING [msg]  ECHO  QUIT  SELECT 0  AUTH  HELLO [2|3]  COMMAND ...
    CLIENT SETNAME|GETNAME|SETINFO|ID|INFO  dyno_config:conn_consistency

``HANDLERS`` maps each name to a pure function ``(Session, args) -> bytes``;
no I/O happens here.  Errors use Redis's own wording so clients recognise
them (e.g. ``-NOPROTO`` for an unknown HELLO version).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from .._version import __version__
from ..config.model import Consistency
from ..protocol import replies as r
from ..protocol.commands import COMMANDS, CommandSpec, Route, arity_error, extract_keys, lookup
from .auth import DEFAULT_USER, NOAUTH_HELLO, WRONGPASS, Authenticator

__all__ = ["HANDLERS", "Session", "answer"]

#: What HELLO reports as the server version: the Redis command set spoken.
REDIS_COMPAT_VERSION = "7.0.0"


@attrs.define(eq=False)
class Session:
    """Per-client-connection state."""

    id: int
    address: str
    protocol: int = 2
    name: bytes | None = None
    lib_name: bytes | None = None
    lib_ver: bytes | None = None
    read_consistency: Consistency = Consistency.DC_ONE
    write_consistency: Consistency = Consistency.DC_ONE
    closing: bool = False
    #: Who may connect, when clients must AUTH (None: no password configured).
    auth: Authenticator | None = None
    authenticated: bool = True
    user: str = DEFAULT_USER
    #: A read-only user's session: writes get -NOPERM.
    readonly: bool = False

    @classmethod
    def open(cls, id: int, address: str, auth: Authenticator | None) -> Session:
        """A new client's session: unauthenticated when ``auth`` requires it."""
        if auth is None or not auth.required:
            return cls(id, address)
        return cls(id, address, auth=auth, authenticated=False)


Handler = Callable[[Session, list[bytes]], bytes]


def _ping(session: Session, args: list[bytes]) -> bytes:
    if len(args) == 1:
        return b"+PONG\r\n"
    if len(args) == 2:
        return r.bulk(args[1])
    return r.error(arity_error("ping"))


def _echo(session: Session, args: list[bytes]) -> bytes:
    return r.bulk(args[1])


def _quit(session: Session, args: list[bytes]) -> bytes:
    session.closing = True
    return b"+OK\r\n"


def _select(session: Session, args: list[bytes]) -> bytes:
    try:
        index = int(args[1])
    except ValueError:
        return r.error("ERR value is not an integer or out of range")
    if index == 0:
        return b"+OK\r\n"
    return r.error(
        f"ERR trinomite serves only database 0 (SELECT {index} refused): "
        "every rack holds one keyspace"
    )


def _auth(session: Session, args: list[bytes]) -> bytes:
    if len(args) > 3:
        return r.error("ERR syntax error")
    auth = session.auth
    if auth is not None:
        user = auth.check(args[1] if len(args) == 3 else None, args[-1])
        if user is None:
            return WRONGPASS
        session.authenticated = True
        session.user = user.name
        session.readonly = user.readonly
        return b"+OK\r\n"
    # No password is configured: answer as Redis 7 does with a nopass default user.
    if len(args) == 2:
        return r.error(
            "ERR AUTH <password> called without any password configured for the default "
            "user. Are you sure your configuration is correct?"
        )
    if len(args) == 3 and args[1].lower() == b"default":
        return b"+OK\r\n"
    return r.error("WRONGPASS invalid username-password pair or user is disabled.")


def _hello(session: Session, args: list[bytes]) -> bytes:
    protocol = session.protocol
    i = 1
    if len(args) > 1:
        try:
            protocol = int(args[1])
        except ValueError:
            return r.error("ERR Protocol version is not an integer or out of range")
        if protocol not in (2, 3):
            return r.error("NOPROTO unsupported protocol version")
        i = 2
    name = session.name
    while i < len(args):
        option = args[i].upper()
        if option == b"AUTH" and i + 2 < len(args):
            denied = _auth(session, [b"auth", args[i + 1], args[i + 2]])
            if denied != b"+OK\r\n":
                return denied
            i += 3
        elif option == b"SETNAME" and i + 1 < len(args):
            if not _valid_client_name(args[i + 1]):
                return r.error(_BAD_NAME)
            name = args[i + 1]
            i += 2
        else:
            return r.error(f"ERR Syntax error in HELLO option '{args[i].decode(errors='replace')}'")
    if not session.authenticated:
        return NOAUTH_HELLO
    session.protocol = protocol
    session.name = name
    fields: dict[bytes, bytes | int | list[bytes]] = {
        b"server": b"redis",
        b"version": REDIS_COMPAT_VERSION.encode(),
        b"proto": protocol,
        b"id": session.id,
        b"mode": b"standalone",
        b"role": b"master",
        b"modules": [],
        b"proxy": f"trinomite-{__version__}".encode(),
    }
    encoded = {r.bulk(k): _encode_field(v) for k, v in fields.items()}
    return r.map_reply(encoded, protocol)


def _encode_field(value: bytes | int | list[bytes]) -> bytes:
    if isinstance(value, int):
        return r.integer(value)
    if isinstance(value, list):
        return r.array(r.bulk(v) for v in value)
    return r.bulk(value)


_BAD_NAME = "ERR Client names cannot contain spaces, newlines or special characters."


def _valid_client_name(name: bytes) -> bool:
    return all(0x21 <= c <= 0x7E for c in name)


def _client(session: Session, args: list[bytes]) -> bytes:
    sub = args[1].lower()
    if sub == b"setname" and len(args) == 3:
        if not _valid_client_name(args[2]):
            return r.error(_BAD_NAME)
        session.name = args[2] or None
        return b"+OK\r\n"
    if sub == b"getname" and len(args) == 2:
        return r.bulk(session.name, session.protocol)
    if sub == b"id" and len(args) == 2:
        return r.integer(session.id)
    if sub == b"setinfo" and len(args) == 4:
        attr = args[2].lower()
        if attr == b"lib-name":
            session.lib_name = args[3]
        elif attr == b"lib-ver":
            session.lib_ver = args[3]
        else:
            return r.error(f"ERR Unrecognized option '{args[2].decode(errors='replace')}'")
        return b"+OK\r\n"
    if sub == b"info" and len(args) == 2:
        return r.bulk(_client_info_line(session))
    if sub in (b"setname", b"getname", b"id", b"setinfo", b"info"):
        return r.error(arity_error("client|" + sub.decode()))
    return r.error(
        f"ERR unsupported CLIENT subcommand '{sub.decode(errors='replace')}': "
        "trinomite answers CLIENT SETNAME, GETNAME, SETINFO, ID and INFO itself"
    )


def _client_info_line(session: Session) -> str:
    def text(value: bytes | None) -> str:
        return value.decode(errors="replace") if value else ""

    return (
        f"id={session.id} addr={session.address} name={text(session.name)} db=0 "
        f"resp={session.protocol} lib-name={text(session.lib_name)} "
        f"lib-ver={text(session.lib_ver)}\n"
    )


def _key_positions(spec: CommandSpec) -> tuple[int, int, int]:
    rule = spec.keys
    if rule == "-" or rule.startswith(("nk", "d1nk")):
        return 0, 0, 0
    if rule == "1+store":
        return 1, 1, 1
    parts = [int(p) for p in rule.split(":")]
    first = parts[0]
    last = parts[1] if len(parts) > 1 else first
    return first, last, parts[2] if len(parts) > 2 else 1


def _command_info(spec: CommandSpec) -> bytes:
    flags = [b"+write\r\n" if spec.access.value == "w" else b"+readonly\r\n"]
    if spec.keys.startswith(("nk", "d1nk")) or spec.keys == "1+store":
        flags.append(b"+movablekeys\r\n")
    first, last, step = _key_positions(spec)
    return r.array(
        [
            r.bulk(spec.name),
            r.integer(spec.arity),
            r.array(flags),
            r.integer(first),
            r.integer(last),
            r.integer(step),
            r.array([]),
            r.array([]),
            r.array([]),
            r.array([]),
        ]
    )


def _command_doc(spec: CommandSpec, protocol: int) -> bytes:
    summary = f"routed by trinomite: {spec.route.value}"
    doc = {r.bulk("summary"): r.bulk(summary), r.bulk("group"): r.bulk("trinomite")}
    return r.map_reply(doc, protocol)


#: COMMAND subcommands' minimum argument counts, as Redis 7 checks them
#: (COUNT takes exactly 2).
_COMMAND_ARITY = {b"count": 2, b"getkeys": 4}


def _command(session: Session, args: list[bytes]) -> bytes:
    if len(args) == 1:
        return r.array(_command_info(spec) for spec in COMMANDS.values())
    sub = args[1].lower()
    minimum = _COMMAND_ARITY.get(sub)
    if minimum is not None and (len(args) < minimum or (minimum == 2 and len(args) > 2)):
        return r.error(arity_error("command|" + sub.decode()))
    if sub == b"count":
        return r.integer(len(COMMANDS))
    if sub == b"list":
        return r.array(r.bulk(name) for name in COMMANDS)
    if sub == b"info":
        names = args[2:] or [name.encode() for name in COMMANDS]
        specs = [lookup(name) for name in names]
        return r.array(_command_info(s) if s else r.null(session.protocol) for s in specs)
    if sub == b"docs":
        names = args[2:] or [name.encode() for name in COMMANDS]
        found = [(n, s) for n in names if (s := lookup(n)) is not None]
        return r.map_reply(
            {r.bulk(s.name): _command_doc(s, session.protocol) for _, s in found}, session.protocol
        )
    if sub == b"getkeys":
        spec = lookup(args[2])
        if spec is None or not spec.arity_ok(len(args) - 2):
            return r.error("ERR Invalid command specified")
        keys = extract_keys(spec, args[2:])
        if not keys:
            return r.error("ERR The command has no key arguments")
        return r.array(r.bulk(k) for k in keys)
    return r.error(
        f"ERR unknown subcommand '{args[1].decode(errors='replace')}'. Try COMMAND HELP."
    )


def _conn_consistency(session: Session, args: list[bytes]) -> bytes:
    name = args[1].decode(errors="replace").upper()
    try:
        level = Consistency(name)
    except ValueError:
        names = " ".join(c.value for c in Consistency)
        return r.error(f"ERR consistency must be one of {names}")
    session.read_consistency = session.write_consistency = level
    return b"+OK\r\n"


HANDLERS: dict[str, Handler] = {
    "ping": _ping,
    "echo": _echo,
    "quit": _quit,
    "select": _select,
    "auth": _auth,
    "hello": _hello,
    "client": _client,
    "command": _command,
    "dyno_config:conn_consistency": _conn_consistency,
}

assert {name for name, spec in COMMANDS.items() if spec.route is Route.NODE} == set(HANDLERS)


def answer(spec: CommandSpec, session: Session, args: list[bytes]) -> bytes:
    """The node's reply to a NODE-routed command (arity already checked)."""
    return HANDLERS[spec.name](session, args)
