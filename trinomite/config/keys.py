"""The table of every configuration key trinomite accepts.

Theory of operation
-------------------
``KEYS`` is the single declaration of the ``dyn_o_mite:`` vocabulary: every
key of Dynomite's ``conf_commands[]`` plus trinomite's extension keys, each
with

* a ``Parser``, which turns the raw YAML value into the ``NodeConfig`` field
  value, or raises ``Invalid`` with the phrase that completes
  "expected ...";
* a ``Status``: ``NORMAL``, ``DEPRECATED`` (Dynomite itself logs it as
  deprecated) or ``DEAD`` (accepted and validated, but without effect);
* a one-line help text, a note on how trinomite differs from Dynomite, and,
  for numbers, the allowed range (``Parser.bounds``).

The loader (``config.load``) is driven only by this table, and
``markdown_table()`` renders it for ``docs/configuration.md``.

Raw values are the text the user wrote: the loader reads YAML with every
plain scalar kept as a string, as Dynomite (libyaml plus its own setters)
does, so ``timeout: "5000"`` and ``timeout: 5000`` mean the same thing and
``preconnect: True`` is rejected, as in Dynomite.  A list-valued key gets a
list of such strings.

Numbers follow Dynomite's "0 means unset" rule: a parser returns ``UNSET``
for 0 and the loader substitutes the ``NodeConfig`` default (``timeout: 0``
is 5000).  Trinomite's extension keys do not have that quirk.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping

import attrs

from trinomite.config.model import (
    STATS_LISTEN_FILE_DEFAULT,
    USER_FORMAT,
    ClientUser,
    ClientVerify,
    Consistency,
    DataStore,
    DatastoreSpec,
    HostPort,
    NodeConfig,
    SecureServerOption,
    Seed,
    UnixPath,
)
from trinomite.protocol.guard import GUARDED
from trinomite.ring.hashing import NAMES

__all__ = [
    "HASHES",
    "INT_MAX",
    "KEYS",
    "KEYS_BY_NAME",
    "SEED_PROVIDERS",
    "UINT32_MAX",
    "UNSET",
    "Invalid",
    "Key",
    "Parser",
    "Status",
    "markdown_table",
]

#: Dynomite keeps most numbers in a C ``int``.
INT_MAX = 2**31 - 1
#: Tokens are one 32-bit word (``parse_dyn_token``).
UINT32_MAX = 2**32 - 1


class Status(enum.Enum):
    """What happens to a key's value once it has been validated."""

    NORMAL = "normal"
    #: Dynomite logs the key as deprecated; it has no effect.
    DEPRECATED = "deprecated"
    #: Accepted and validated, but has no effect (in Dynomite, trinomite or both).
    DEAD = "ignored"


class Unset(enum.Enum):
    """Type of ``UNSET``: a numeric 0, which Dynomite reads as "use the default"."""

    UNSET = "unset"


UNSET = Unset.UNSET


class Invalid(ValueError):
    """A parser rejected a value.

    ``expected`` completes the sentence "expected ..."; ``index`` is the
    offending list item, when the value is a list.
    """

    def __init__(self, expected: str, *, index: int | None = None) -> None:
        super().__init__(f"expected {expected}")
        self.expected = expected
        self.index = index


@attrs.frozen
class Parser:
    """How one key's raw value (a string, or a list of strings) becomes a field value."""

    #: What a valid value looks like; completes "expected ..." in errors and docs.
    expected: str
    #: One non-empty scalar (or one list item) to its value; raises ``Invalid``.
    convert: Callable[[str], object]
    #: The value is a YAML list of scalars, converted item by item into a tuple.
    many: bool = False
    min_items: int = 0
    max_items: int | None = None
    #: Completes "expected ..." when a list has more than ``max_items`` entries.
    too_many: str = ""
    #: Allowed (low, high) for numbers, for docs and tests.
    bounds: tuple[int, int] | None = None

    @property
    def described(self) -> str:
        """``expected``, for the whole value (a list, for list-valued keys)."""
        return f"a list of entries like {self.expected}" if self.many else self.expected

    def parse(self, raw: object) -> object:
        """Convert ``raw``; raise ``Invalid`` when its shape or its text is wrong."""
        if not self.many:
            if not isinstance(raw, str) or not raw:
                raise Invalid(self.expected)
            return self.convert(raw)
        if not isinstance(raw, list):
            raise Invalid(self.described)
        values = []
        for index, item in enumerate(raw):
            if self.max_items is not None and index >= self.max_items:
                raise Invalid(self.too_many, index=index)
            if not isinstance(item, str) or not item:
                raise Invalid(self.expected, index=index)
            try:
                values.append(self.convert(item))
            except Invalid as exc:
                raise Invalid(exc.expected, index=index) from None
        if len(values) < self.min_items:
            raise Invalid(f"at least {self.min_items} entry like {self.expected}")
        return tuple(values)


# ---- value parsers ---------------------------------------------------------

_INTEGER = re.compile(r"-?[0-9]+")


def number(
    lo: int,
    hi: int,
    unit: str = "",
    *,
    multiple_of: int = 1,
    zero_is_default: bool = True,
) -> Parser:
    """A decimal integer in ``lo..hi``; 0 gives ``UNSET`` when ``zero_is_default``."""
    noun = f"a whole number of {unit}" if unit else "a whole number"
    span = f"{noun} from {lo} to {hi}"
    if multiple_of > 1:
        span += f" that is a multiple of {multiple_of}"
    if zero_is_default:
        span += " (0 means the default)"

    def convert(text: str) -> int | Unset:
        if not _INTEGER.fullmatch(text):
            raise Invalid(noun)
        value = int(text)
        if value == 0 and zero_is_default:
            return UNSET
        if not lo <= value <= hi or value % multiple_of:
            raise Invalid(span)
        return value

    return Parser(span, convert, bounds=(lo, hi))


def milliseconds() -> Parser:
    return number(1, INT_MAX, "milliseconds")


def _flag(text: str) -> bool:
    if text not in ("true", "false"):
        raise Invalid("true or false (lowercase)")
    return text == "true"


FLAG = Parser("true or false (lowercase)", _flag)


def choice(table: Mapping[str, object], *, any_case: bool = False) -> Parser:
    """One of ``table``'s names, exactly (no prefix matching, unlike Dynomite)."""
    expected = "one of " + ", ".join(table) + (" (any case)" if any_case else "")
    folded = {name.casefold() if any_case else name: value for name, value in table.items()}

    def convert(text: str) -> object:
        try:
            return folded[text.casefold() if any_case else text]
        except KeyError:
            raise Invalid(expected) from None

    return Parser(expected, convert)


def _text(text: str) -> str:
    return text


TEXT = Parser("a non-empty string", _text)
PATH = Parser("a file path", _text)

_NAME = re.compile(r"[^\s:]+")


def _name(text: str) -> str:
    if not _NAME.fullmatch(text):
        raise Invalid("a name without spaces or ':'")
    return text


NAME = Parser("a name without spaces or ':'", _name)


def _hash_tag(text: str) -> str:
    if len(text) != 2:
        raise Invalid('exactly two characters, like "{}" (quoted)')
    return text


def _user(text: str) -> ClientUser:
    try:
        return ClientUser.parse(text)
    except ValueError:
        raise Invalid(USER_FORMAT) from None


USERS = Parser(USER_FORMAT, _user, many=True)

HASH_TAG = Parser('exactly two characters, like "{}" (quoted)', _hash_tag)

_TOKENS = f"comma-separated whole numbers from 0 to {UINT32_MAX}"


def _tokens(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and part.isascii() for part in parts):
        raise Invalid(_TOKENS)
    tokens = tuple(int(part) for part in parts)
    if max(tokens) > UINT32_MAX:
        raise Invalid(_TOKENS)
    return tokens


TOKENS = Parser(_TOKENS, _tokens)


def _port(text: str, lo: int, expected: str) -> int:
    if not (text.isdigit() and text.isascii()) or not lo <= int(text) <= 65535:
        raise Invalid(expected)
    return int(text)


def _split_host(text: str, expected: str) -> tuple[str, list[str]]:
    """``host:a:b`` or ``[v6]:a:b`` -> (host, [a, b]); IPv6 hosts need brackets."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise Invalid(expected)
        fields = rest[1:].split(":")
    else:
        host, *fields = text.split(":")
    if not host or any(c.isspace() for c in host):
        raise Invalid(expected)
    return host, fields


def _split_name(text: str, expected: str) -> tuple[str, str | None]:
    """``spec [name]`` -> (spec, name)."""
    words = text.split()
    if len(words) > 2:
        raise Invalid(expected)
    return words[0], (words[1] if len(words) == 2 else None)


_HOST_PORT = "host:port with a port from 0 to 65535 (IPv6 as [addr]:port)"


def _host_port(text: str) -> HostPort:
    host, fields = _split_host(text, _HOST_PORT)
    if len(fields) != 1:
        raise Invalid(_HOST_PORT)
    return HostPort(host, _port(fields[0], 0, _HOST_PORT))


HOST_PORT = Parser(_HOST_PORT, _host_port)

_LISTEN = f"{_HOST_PORT}, or a /unix/socket/path"


def _listen(text: str) -> HostPort | UnixPath:
    if text.startswith("/"):
        return UnixPath(text)
    try:
        return _host_port(text)
    except Invalid:
        raise Invalid(_LISTEN) from None


LISTEN = Parser(_LISTEN, _listen)

_SERVER = "host:port:weight [name], /unix/path:weight [name] or embedded:weight [name]"


def _server(text: str) -> DatastoreSpec:
    spec, name = _split_name(text, _SERVER)
    if spec.startswith("/"):
        path, colon, weight = spec.rpartition(":")
        if not colon or path == "/":
            raise Invalid(_SERVER)
        return DatastoreSpec("unix", UnixPath(path), _weight(weight), name)
    host, fields = _split_host(spec, _SERVER)
    if host == "embedded" and len(fields) == 1:
        return DatastoreSpec("embedded", None, _weight(fields[0]), name)
    if len(fields) != 2:
        raise Invalid(_SERVER)
    address = HostPort(host, _port(fields[0], 1, f"{_SERVER} with a port from 1 to 65535"))
    return DatastoreSpec("tcp", address, _weight(fields[1]), name)


def _weight(text: str) -> int:
    if not (text.isdigit() and text.isascii()) or int(text) > INT_MAX:
        raise Invalid(f"{_SERVER} with a whole-number weight (mandatory, ignored)")
    return int(text)


SERVERS = Parser(
    _SERVER,
    _server,
    many=True,
    min_items=1,
    max_items=1,
    too_many="a single entry (one datastore per node, as in Dynomite)",
)

_SEED = "host:port:rack:dc:tokens [name]"


def _seed(text: str) -> Seed:
    spec, name = _split_name(text, _SEED)
    host, fields = _split_host(spec, _SEED)
    if len(fields) != 4:
        raise Invalid(_SEED)
    port_text, rack, dc, tokens = fields
    port = _port(port_text, 1, f"{_SEED} with a port from 1 to 65535")
    if not _NAME.fullmatch(rack) or not _NAME.fullmatch(dc):
        raise Invalid(f"{_SEED} with non-empty rack and dc names")
    try:
        return Seed(host, port, rack, dc, _tokens(tokens), name)
    except Invalid:
        raise Invalid(f"{_SEED} with tokens as {_TOKENS}") from None


SEEDS = Parser(_SEED, _seed, many=True)


#: Deprecated Dynomite keys without a field: the loader drops them unparsed,
#: so any value, scalar or list, is accepted (as by ``conf_set_deprecated``).
ANYTHING = Parser("any value", _text)

#: ``hash`` names, as in Dynomite's ``hash_strings`` (``murmur3`` is a stub there).
HASHES = NAMES
SEED_PROVIDERS = ("simple_provider", "florida_provider", "dns_provider")
CONSISTENCY = choice({c.value: c for c in Consistency}, any_case=True)
CONNECTIONS = number(1, 255, "connections")


# ---- the table -------------------------------------------------------------


@attrs.frozen
class Key:
    """One configuration key."""

    name: str
    parser: Parser
    help: str
    status: Status = Status.NORMAL
    #: Why a DEPRECATED or DEAD key has no effect (used in the warning).
    why: str = ""
    #: How trinomite differs from Dynomite for this key, if it does.
    differs: str = ""
    #: A trinomite extension, unknown to Dynomite.
    extension: bool = False

    @property
    def stored(self) -> bool:
        """Whether the value lands in a ``NodeConfig`` field."""
        return self.name in attrs.fields_dict(NodeConfig)


def _extension(name: str, lo: int, hi: int, unit: str, help: str) -> Key:
    """A numeric trinomite extension key (no "0 means the default" quirk)."""
    return Key(name, number(lo, hi, unit, zero_is_default=False), help, extension=True)


def _file(name: str, help: str) -> Key:
    """A file-path trinomite extension key."""
    return Key(name, PATH, help, extension=True)


_UNUSED = "parsed and unused by Dynomite, and unused by trinomite"
_NO_EFFECT = "has no effect in Dynomite (code reading), and none in trinomite"
_RECON = "used only by Dynomite's deprecated anti-entropy module"
_DEPRECATED = "Dynomite logs it as deprecated and ignores it, and so does trinomite"

KEYS: tuple[Key, ...] = (
    Key("listen", LISTEN, "Client listener (RESP clients connect here). Required."),
    Key("dyn_listen", HOST_PORT, "Peer listener; its host is this node's name among peers."),
    Key("dyn_port", number(1, 65535), "Peer port.", Status.DEAD, _UNUSED),
    Key(
        "servers",
        SERVERS,
        "The one backing datastore; weight is mandatory and ignored. Required.",
        differs="`embedded:weight` selects trinomite's in-process store.",
    ),
    Key(
        "data_store",
        choice({"0": DataStore.REDIS, "1": DataStore.MEMCACHE}),
        "Datastore protocol: 0 = Redis, 1 = memcached.",
        differs="1 (memcached) is validated, but the node does not support it yet.",
    ),
    Key(
        "tokens",
        TOKENS,
        "This node's position(s) on its rack's token ring.",
        differs="Tokens above 4294967295 are rejected (Dynomite wraps them).",
    ),
    Key(
        "dyn_seeds",
        SEEDS,
        "Static peer list; do not list the node itself.",
        differs="Hostnames are resolved when connecting, not at parse time.",
    ),
    Key(
        "dyn_seed_provider",
        choice({p: p for p in SEED_PROVIDERS}),
        "Where the peer list comes from.",
        differs="Unknown names are rejected (Dynomite falls back to simple_provider).",
    ),
    Key("datacenter", NAME, "This node's datacenter."),
    Key("rack", NAME, "This node's rack (one full replica of the data per rack)."),
    Key(
        "env",
        TEXT,
        "Cloud environment (aws or network) for address discovery.",
        Status.DEAD,
        "trinomite does not read the address environment variables (EC2_PUBLIC_HOSTNAME...)",
    ),
    Key("hash", choice({h: h for h in HASHES}), "Key hash function."),
    Key("hash_tag", HASH_TAG, "Hash only the part of the key between these two characters."),
    Key("distribution", ANYTHING, "Key distribution.", Status.DEPRECATED, _DEPRECATED),
    Key("server_connections", ANYTHING, "Server connections.", Status.DEPRECATED, _DEPRECATED),
    Key("timeout", milliseconds(), "Per-request timeout towards the datastore and peers."),
    Key("backlog", number(1, INT_MAX), "listen() backlog of the client and peer listeners."),
    Key(
        "client_connections",
        number(1, INT_MAX, "connections"),
        "Maximum number of client connections (0 = unlimited).",
        differs="Enforced (Dynomite forces it to 0 and never enforces it).",
    ),
    Key("preconnect", FLAG, "Connect to the datastore and all peers at start."),
    Key("auto_eject_hosts", FLAG, "Eject failing hosts.", Status.DEAD, _NO_EFFECT),
    Key("server_retry_timeout", milliseconds(), "Maximum reconnect backoff to the datastore."),
    Key(
        "server_failure_limit",
        number(1, INT_MAX),
        "Failures before ejection.",
        Status.DEAD,
        _NO_EFFECT,
    ),
    Key("dyn_read_timeout", milliseconds(), "Peer read timeout.", Status.DEAD, _UNUSED),
    Key("dyn_write_timeout", milliseconds(), "Peer write timeout.", Status.DEAD, _UNUSED),
    Key("dyn_connections", CONNECTIONS, "Peer connections.", Status.DEAD, _UNUSED),
    Key("gos_interval", milliseconds(), "Gossip round interval and failure-detector window."),
    Key("enable_gossip", FLAG, "Exchange gossip with peers (experimental in Dynomite)."),
    Key(
        "secure_server_option",
        choice({s.value: s for s in SecureServerOption}),
        "Which peer links are encrypted.",
        differs="Invalid values are an error (Dynomite logs and uses none); links use TLS.",
    ),
    Key(
        "pem_key_file",
        PATH,
        "Dynomite's shared RSA key; secures peer links when no tls_cert_file is set.",
        differs="Links run TLS with a certificate derived from the key, pinned to it "
        "(docs/tls.md); not wire-compatible with Dynomite's encryption.",
    ),
    Key("recon_key_file", PATH, "Anti-entropy key file.", Status.DEAD, _RECON),
    Key("recon_iv_file", PATH, "Anti-entropy IV file.", Status.DEAD, _RECON),
    Key(
        "read_consistency",
        CONSISTENCY,
        "Consistency level of reads.",
        differs="Names must match exactly (Dynomite prefix-matches: dc_one_foo is dc_one).",
    ),
    Key(
        "write_consistency",
        CONSISTENCY,
        "Consistency level of writes.",
        differs="Names must match exactly, as for read_consistency.",
    ),
    Key("read_repairs_enabled", FLAG, "Repair stale replicas seen by quorum reads."),
    Key(
        "stats_listen",
        HOST_PORT,
        "Stats/admin HTTP listener.",
        differs="A file without it gets 127.0.0.1:22222 (Dynomite: 0.0.0.0:22222); a "
        "NodeConfig built in Python gets an ephemeral loopback port (Node.admin_address).",
    ),
    Key("stats_interval", milliseconds(), "Stats aggregation period."),
    Key(
        "mbuf_size",
        number(512, 512000, "bytes", multiple_of=16),
        "Size of Dynomite's message buffers.",
        Status.DEAD,
        "trinomite has no mbufs; the value is validated and ignored",
    ),
    Key("max_msgs", number(100000, 1000000), "Maximum number of messages in flight."),
    Key("conn_msg_rate", number(1, INT_MAX, "messages per second"), "Rate per remote-DC link."),
    Key("datastore_connections", CONNECTIONS, "Connections to the datastore."),
    Key("local_peer_connections", CONNECTIONS, "Connections to each same-DC peer."),
    Key("remote_peer_connections", CONNECTIONS, "Connections to each remote-DC peer."),
    # ---- trinomite extensions (0 is not "the default" for these) ----------
    _extension("max_bulk_len", 1, UINT32_MAX, "bytes", "Largest bulk string a client may send."),
    _extension("max_multibulk_len", 1, INT_MAX, "elements", "Most elements in one command."),
    _extension("max_inline_len", 1, INT_MAX, "bytes", "Longest inline command line."),
    _extension(
        "max_client_pipeline", 1, INT_MAX, "requests", "Most in-flight requests per client."
    ),
    _extension(
        "client_read_timeout",
        0,
        INT_MAX,
        "milliseconds",
        "A request begun and not completed this long closes the client (0: never).",
    ),
    _extension(
        "client_idle_timeout",
        0,
        INT_MAX,
        "milliseconds",
        "Close clients idle this long (0: never, as Redis's timeout 0).",
    ),
    _extension(
        "client_output_buffer_limit",
        0,
        INT_MAX,
        "bytes",
        "Unsent replies one client may hold before it is disconnected (0: no limit).",
    ),
    _extension(
        "client_memory_budget",
        0,
        UINT32_MAX,
        "bytes",
        "Bytes all clients may hold together; past it the biggest are disconnected (0: none).",
    ),
    _extension(
        "shutdown_grace", 0, INT_MAX, "milliseconds", "Grace for requests in flight at stop."
    ),
    _extension(
        "feed_interval", 10, INT_MAX, "milliseconds", "Period of the admin WebSocket snapshots."
    ),
    Key(
        "admin_token",
        TEXT,
        "Bearer token required by state-changing admin paths.",
        extension=True,
    ),
    _file("tls_cert_file", "This node's certificate (PEM; may hold its chain)."),
    _file("tls_key_file", "The certificate's private key (PEM)."),
    _file("tls_ca_file", "CA certificate(s) that peers' certificates must chain to."),
    _extension(
        "tls_handshake_timeout", 1, INT_MAX, "milliseconds", "Longest a TLS handshake may take."
    ),
    Key("client_tls", FLAG, "Serve clients over TLS on listen.", extension=True),
    _file("client_tls_cert_file", "Client listener's certificate (default: tls_cert_file)."),
    _file("client_tls_key_file", "Client listener's key (default: tls_key_file)."),
    _file("client_tls_ca_file", "CA for client certificates (default: tls_ca_file)."),
    Key(
        "client_tls_verify",
        choice({v.value: v for v in ClientVerify}),
        "Whether TLS clients must present a certificate signed by client_tls_ca_file.",
        extension=True,
    ),
    Key(
        "allowed_commands",
        attrs.evolve(choice({name: name for name in GUARDED}), many=True),
        "Server-state commands clients may run on the datastore anyway (refused by default).",
        extension=True,
        differs="Dynomite forwards REPLICAOF/SLAVEOF and CONFIG GET/INFO unfiltered "
        "(docs/redis-commands.md).",
    ),
    Key(
        "requirepass",
        TEXT,
        "Password of the default client user; clients must AUTH when set.",
        extension=True,
        differs="Dynomite has no client AUTH (its issue #46); see docs/security.md.",
    ),
    Key(
        "users",
        USERS,
        "Named client users with read-write (rw) or read-only (ro) rights.",
        extension=True,
        differs="With users and no requirepass, the default user is disabled.",
    ),
    Key(
        "hinted_handoff",
        FLAG,
        "Keep writes a replica missed and replay them when it is back (docs/hints.md).",
        extension=True,
        differs="Dynomite drops writes to unreachable replicas.",
    ),
    _file("hints_dir", "Directory of the hint logs (default: in memory, lost on restart)."),
    _extension(
        "max_hint_window",
        0,
        INT_MAX,
        "milliseconds",
        "A peer down longer than this gets no more hints (0: it never does).",
    ),
    _extension(
        "hints_max_bytes",
        0,
        UINT32_MAX,
        "bytes",
        "Bytes all hint logs may hold (0: 1 GiB under hints_dir, 64 MiB in memory).",
    ),
    _extension(
        "hints_sync_interval", 1, INT_MAX, "milliseconds", "How often hint logs are fsynced."
    ),
    _extension("hint_replay_rate", 1, INT_MAX, "hints per second", "Replay throttle."),
    Key(
        "datastore_username",
        NAME,
        "ACL user the node authenticates as on its datastore connections.",
        extension=True,
    ),
    Key(
        "datastore_password",
        TEXT,
        "Password the node sends (AUTH) on its datastore connections; never the clients'.",
        extension=True,
    ),
)

KEYS_BY_NAME: Mapping[str, Key] = {key.name: key for key in KEYS}


# ---- documentation ---------------------------------------------------------


def _default_text(key: Key) -> str:
    if not key.stored:
        return "-"
    if key.name == "stats_listen":
        return f"`{STATS_LISTEN_FILE_DEFAULT}`"
    default = attrs.fields_dict(NodeConfig)[key.name].default
    if default is attrs.NOTHING:
        return "**required**"
    if isinstance(default, enum.Enum):
        default = default.value
    if isinstance(default, bool):
        return str(default).lower()
    if default is None or default == ():
        return "none"
    return f"`{default}`"


def markdown_table() -> str:
    """The key table of ``docs/configuration.md``, rendered from ``KEYS``."""
    rows = [
        "| Key | Default | Accepts | Meaning | trinomite |",
        "|---|---|---|---|---|",
    ]
    for key in KEYS:
        notes = [key.differs] if key.differs else []
        if key.extension:
            notes.insert(0, "Extension (not a Dynomite key).")
        if key.status is not Status.NORMAL:
            notes.insert(0, f"**{key.status.value}**: {key.why}.")
        accepts = key.parser.described.replace("|", "\\|")
        rows.append(
            f"| `{key.name}` | {_default_text(key)} | {accepts} | {key.help} | {' '.join(notes)} |"
        )
    return "\n".join(rows) + "\n"
