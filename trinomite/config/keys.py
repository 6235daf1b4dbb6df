"""The table of every configuration key trinomite accepts.

Theory of operation
-------------------
``KEYS`` is the single declaration of the ``dyn_o_mite:`` vocabulary: every
key of Dynomite's ``conf_commands[]`` plus trinomite's extension keys, each
with

* a ``Parser`` (``config.values``), which turns the raw YAML value into the
  ``NodeConfig`` field value, or raises ``Invalid`` with the phrase that
  completes "expected ...";
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
from collections.abc import Mapping

import attrs

from trinomite.config.model import (
    STATS_LISTEN_FILE_DEFAULT,
    ClientVerify,
    DataStore,
    NodeConfig,
    SecureServerOption,
)
from trinomite.config.values import (
    ANYTHING,
    CONNECTIONS,
    CONSISTENCY,
    FLAG,
    HASH_TAG,
    HASHES,
    HOST_PORT,
    INT_MAX,
    LISTEN,
    NAME,
    PATH,
    SEED_PROVIDERS,
    SEEDS,
    SERVERS,
    TEXT,
    TOKENS,
    UINT32_MAX,
    UNSET,
    USERS,
    Invalid,
    Parser,
    choice,
    milliseconds,
    number,
)
from trinomite.protocol.guard import GUARDED

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


class Status(enum.Enum):
    """What happens to a key's value once it has been validated."""

    NORMAL = "normal"
    #: Dynomite logs the key as deprecated; it has no effect.
    DEPRECATED = "deprecated"
    #: Accepted and validated, but has no effect (in Dynomite, trinomite or both).
    DEAD = "ignored"


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
        differs="1 needs memcached 1.6 or newer (not the embedded store) and no "
        "requirepass/users; see docs/memcached.md.",
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
        "Where the peer list comes from: dyn_seeds, Florida (HTTP) or DNS TXT, polled.",
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
    Key(
        "gos_interval",
        milliseconds(),
        "Gossip round interval; a silent member is DOWN after 2.3 to 3.7 of them.",
        differs="Dynomite's detector takes 40 intervals (1200 s at the default).",
    ),
    Key(
        "enable_gossip",
        FLAG,
        "Learn members, their states and failures by gossip (docs/gossip.md).",
        differs="Dependable: versioned state, phi-accrual detection, removal, NORMAL when safe.",
    ),
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
    Key(
        "read_repairs_enabled",
        FLAG,
        "Repair stale replicas seen by quorum reads.",
        differs="Versions whole keys (SET, DEL) and hash fields and set members (last write "
        "wins, tombstones) and repairs GET, HGET, SISMEMBER and ZSCORE at the quorum "
        "levels; other commands are not versioned (docs/cluster.md).",
    ),
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
        "max_item_size",
        0,
        2**31 - 3,
        "bytes",
        "Largest memcached value a client may store (data_store: 1; memcached's -I).",
    ),
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
    _extension(
        "tombstone_grace",
        1,
        INT_MAX,
        "milliseconds",
        "How long read repair's tombstones are kept before they are collected; must "
        "exceed max_hint_window and the longest partition (docs/cluster.md).",
    ),
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
