"""Typed, frozen configuration of one trinomite node.

Theory of operation
-------------------
A Dynomite ``dyn_o_mite:`` YAML file is read by ``config.load`` into the
classes below.  Field names are exactly Dynomite's key names (see
``config.keys`` for the key table with defaults and help), so an error about
a field can always be reported with the key the user wrote.  Everything here
is immutable: a running node never mutates its config; runtime knobs
(consistency, state, timeout factor) live in the node's own state.

Values that Dynomite spells as strings (``host:port``, seeds, server entries)
become small value classes here.  No sockets, no DNS: hostnames are kept as
written and resolved when the node connects.
"""

from __future__ import annotations

import enum

import attrs

__all__ = [
    "STATS_LISTEN_FILE_DEFAULT",
    "ClientUser",
    "ClientVerify",
    "Consistency",
    "DataStore",
    "DatastoreSpec",
    "HostPort",
    "NodeConfig",
    "SecureServerOption",
    "Seed",
    "UnixPath",
]


class Consistency(enum.Enum):
    """Dynomite's consistency levels (``consistency_t`` in ``dyn_message.h``)."""

    DC_ONE = "DC_ONE"
    DC_QUORUM = "DC_QUORUM"
    DC_SAFE_QUORUM = "DC_SAFE_QUORUM"
    DC_EACH_SAFE_QUORUM = "DC_EACH_SAFE_QUORUM"


class ClientVerify(enum.Enum):
    """Whether TLS clients must present a certificate (trinomite extension)."""

    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"


class SecureServerOption(enum.Enum):
    """Which peer links use (mutual) TLS."""

    NONE = "none"
    RACK = "rack"
    DATACENTER = "datacenter"
    ALL = "all"


class DataStore(enum.IntEnum):
    """``data_store``: 0 = Redis, 1 = memcached (as in Dynomite)."""

    REDIS = 0
    MEMCACHE = 1


@attrs.frozen
class HostPort:
    """A TCP address as written in the config (``host:port``)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


#: ``stats_listen`` of a config file that does not set it (Dynomite: 0.0.0.0:22222).
STATS_LISTEN_FILE_DEFAULT = HostPort("127.0.0.1", 22222)


@attrs.frozen
class UnixPath:
    """A unix-domain socket path (``/path/to/sock``)."""

    path: str

    def __str__(self) -> str:
        return self.path


@attrs.frozen
class DatastoreSpec:
    """One entry of ``servers``.

    ``kind`` is ``"tcp"`` (``host:port:weight [name]``), ``"unix"``
    (``/path:weight [name]``) or ``"embedded"`` (``embedded:weight [name]``,
    trinomite's in-process Redis-compatible store).  ``weight`` is mandatory
    in the syntax and ignored, exactly as in Dynomite.
    """

    kind: str
    address: HostPort | UnixPath | None = None
    weight: int = 1
    name: str | None = None

    @classmethod
    def embedded(cls, name: str | None = None) -> DatastoreSpec:
        return cls(kind="embedded", address=None, weight=1, name=name)

    @classmethod
    def tcp(cls, host: str, port: int, name: str | None = None) -> DatastoreSpec:
        return cls(kind="tcp", address=HostPort(host, port), weight=1, name=name)

    @property
    def stats_name(self) -> str:
        """Dynomite's server stats name: ``host:port``, or ``host`` for port 11211."""
        if self.name:
            return self.name
        if isinstance(self.address, HostPort):
            if self.address.port == 11211:
                return self.address.host
            return str(self.address)
        if isinstance(self.address, UnixPath):
            return self.address.path
        return "embedded"


@attrs.frozen
class Seed:
    """One ``dyn_seeds`` entry: ``host:port:rack:dc:tokens [name]``."""

    host: str
    port: int
    rack: str
    dc: str
    tokens: tuple[int, ...]
    name: str | None = None

    @property
    def address(self) -> HostPort:
        return HostPort(self.host, self.port)


MIB = 1024 * 1024


USER_FORMAT = "name:rw:password or name:ro:password"


@attrs.frozen
class ClientUser:
    """A named client user (``users:`` entry ``name:rw:password``)."""

    name: str
    password: str = attrs.field(repr=False)
    readonly: bool = False

    @classmethod
    def parse(cls, text: str) -> ClientUser:
        """``name:rw:password`` or ``name:ro:password``; ValueError naming the format."""
        name, _, rest = text.partition(":")
        access, _, password = rest.partition(":")
        if not name or any(c.isspace() for c in name) or access not in ("rw", "ro"):
            raise ValueError(f"expected {USER_FORMAT}")
        if not password:
            raise ValueError(f"expected {USER_FORMAT}")
        return cls(name, password, access == "ro")


@attrs.frozen(kw_only=True)
class NodeConfig:
    """Everything one node needs, with Dynomite's *code* defaults.

    Fields marked "trinomite" are extensions; the rest are Dynomite keys with
    the same names and meanings (differences are listed in ``docs/``).
    """

    #: Name of the YAML root key (Dynomite's pool name), shown in /info.
    pool_name: str = "dyn_o_mite"
    #: Where the config came from, for messages (not a Dynomite key).
    source: str = "<memory>"

    listen: HostPort | UnixPath
    servers: tuple[DatastoreSpec, ...]
    dyn_listen: HostPort | None = None
    dyn_port: int | None = None
    data_store: DataStore = DataStore.REDIS
    tokens: tuple[int, ...] = ()
    dyn_seeds: tuple[Seed, ...] = ()
    dyn_seed_provider: str = "simple_provider"
    datacenter: str = "localdc"
    rack: str = "localrack"
    env: str = "aws"
    hash: str = "murmur"
    hash_tag: str | None = None
    timeout: int = 5000
    backlog: int = 512
    #: Dynomite forces this to 0 and never enforces it; trinomite enforces it
    #: as the maximum number of client connections (0 = unlimited).
    client_connections: int = 0
    preconnect: bool = True
    auto_eject_hosts: bool = True
    server_retry_timeout: int = 10000
    server_failure_limit: int = 3
    dyn_read_timeout: int = 10000
    dyn_write_timeout: int = 10000
    dyn_connections: int = 100
    gos_interval: int = 30000
    enable_gossip: bool = False
    secure_server_option: SecureServerOption = SecureServerOption.NONE
    pem_key_file: str = "conf/dynomite.pem"
    recon_key_file: str = "conf/recon_key.pem"
    recon_iv_file: str = "conf/recon_iv.pem"
    read_consistency: Consistency = Consistency.DC_ONE
    write_consistency: Consistency = Consistency.DC_ONE
    read_repairs_enabled: bool = False
    #: An ephemeral loopback port for a config built in Python (an embedded
    #: node must not collide with others); a config *file* without the key
    #: gets ``STATS_LISTEN_FILE_DEFAULT``, Dynomite's port on loopback.
    stats_listen: HostPort = HostPort("127.0.0.1", 0)
    stats_interval: int = 30000
    mbuf_size: int = 16384
    max_msgs: int = 200000
    conn_msg_rate: int = 50000
    datastore_connections: int = 1
    local_peer_connections: int = 1
    remote_peer_connections: int = 1

    # ---- trinomite extensions -------------------------------------------
    #: Largest bulk string a client may send (Redis proto-max-bulk-len).
    max_bulk_len: int = 512 * MIB
    #: Largest multibulk element count a client may send.
    max_multibulk_len: int = 1024 * 1024
    #: Longest inline command line.
    max_inline_len: int = 64 * 1024
    #: Largest value a memcached client may store (memcached's ``-I``, 1 MiB).
    max_item_size: int = MIB
    #: Most requests one client may have in flight (pipeline depth bound).
    max_client_pipeline: int = 1024
    #: A request begun but not completed within this many ms closes its client.
    client_read_timeout: int = 30000
    #: Clients idle this many ms are closed (0: never, as Redis's ``timeout 0``).
    client_idle_timeout: int = 0
    #: Unsent replies one client may hold, in bytes, before it is disconnected.
    client_output_buffer_limit: int = 64 * MIB
    #: Bytes all clients together may hold in the node (input and output).
    client_memory_budget: int = 512 * MIB
    #: Grace period for in-flight requests on shutdown, in ms.
    shutdown_grace: int = 5000
    #: Period of the admin WebSocket feed's snapshots, in ms.
    feed_interval: int = 1000
    #: Bearer token for state-changing admin paths.  Without one, those paths
    #: are refused when the admin port is bound to a non-loopback address.
    admin_token: str | None = None
    #: This node's TLS certificate (PEM, may carry its chain), key and the
    #: cluster CA that peers' certificates must chain to (docs/tls.md).
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_ca_file: str | None = None
    #: Longest a TLS handshake may take, peer or client, in ms.
    tls_handshake_timeout: int = 5000
    #: Serve clients over TLS on ``listen``.
    client_tls: bool = False
    #: Client-listener certificate, key and CA; default to the tls_* files.
    client_tls_cert_file: str | None = None
    client_tls_key_file: str | None = None
    client_tls_ca_file: str | None = None
    #: Whether clients must present a certificate from ``client_tls_ca_file``.
    client_tls_verify: ClientVerify = ClientVerify.NONE
    #: Guarded server-state commands forwarded anyway (``protocol.guard.GUARDED``).
    allowed_commands: tuple[str, ...] = ()
    #: The ``default`` client user's password (clients must AUTH when set).
    requirepass: str | None = attrs.field(default=None, repr=False)
    #: Named client users, read-write or read-only (``client.auth``).
    users: tuple[ClientUser, ...] = ()
    #: Hinted handoff (``trinomite.hints``): keep writes a replica missed and
    #: replay them when it is back; under ``hints_dir`` they survive restarts.
    hinted_handoff: bool = True
    hints_dir: str | None = None
    #: A peer down longer than this (ms) gets no more hints (Cassandra: 3 h).
    max_hint_window: int = 3 * 3600 * 1000
    #: Bytes all hint logs together may hold; 0: 1 GiB on disk, 64 MiB in memory.
    hints_max_bytes: int = 0
    #: How often the hint logs are fsynced (ms).
    hints_sync_interval: int = 1000
    #: Replay throttle, hints per second per node.
    hint_replay_rate: int = 5000
    #: How long read repair's tombstones are kept (ms; Cassandra's gc_grace: 10 days).
    tombstone_grace: int = 10 * 24 * 3600 * 1000
    #: Credentials the node presents to its datastore (never the clients').
    datastore_username: str | None = None
    datastore_password: str | None = attrs.field(default=None, repr=False)

    @property
    def datastore(self) -> DatastoreSpec:
        """The single backing datastore (Dynomite supports exactly one)."""
        return self.servers[0]
