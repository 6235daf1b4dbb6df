"""Tests of trinomite.config: the key table, the loader and its error messages.

Error tests are one function per class of error, each a table of cases.
Every case is written to a real file and loaded with ``load_config``, and
the message must start with ``<file>:<line>:<column>: key '<key>': ``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trinomite.config import (
    KEYS,
    ConfigError,
    Consistency,
    DataStore,
    DatastoreSpec,
    HostPort,
    NodeConfig,
    SecureServerOption,
    Seed,
    Status,
    UnixPath,
    load_config,
    parse_config,
)
from trinomite.config.keys import KEYS_BY_NAME, UINT32_MAX, markdown_table

ROOT = Path(__file__).resolve().parent.parent
CONF_FILES = sorted((ROOT / "conf").glob("*.yml"))

BASE = "dyn_o_mite:\n  listen: 127.0.0.1:8102\n  servers:\n  - embedded:1\n"
# Lines added to BASE start at line 5, with the value at column 3 + len("key: ").
EXTRA_LINE = 5

#: Every key of Dynomite's conf_commands[] (the table of dynomite.md section 1.2).
DYNOMITE_KEYS = (
    "listen",
    "dyn_listen",
    "dyn_port",
    "servers",
    "data_store",
    "tokens",
    "dyn_seeds",
    "dyn_seed_provider",
    "datacenter",
    "rack",
    "env",
    "hash",
    "hash_tag",
    "distribution",
    "server_connections",
    "timeout",
    "backlog",
    "client_connections",
    "preconnect",
    "auto_eject_hosts",
    "server_retry_timeout",
    "server_failure_limit",
    "dyn_read_timeout",
    "dyn_write_timeout",
    "dyn_connections",
    "gos_interval",
    "enable_gossip",
    "secure_server_option",
    "pem_key_file",
    "recon_key_file",
    "recon_iv_file",
    "read_consistency",
    "write_consistency",
    "read_repairs_enabled",
    "stats_listen",
    "stats_interval",
    "mbuf_size",
    "max_msgs",
    "conn_msg_rate",
    "datastore_connections",
    "local_peer_connections",
    "remote_peer_connections",
)

#: A valid value for every key, as written in YAML.
SAMPLES = {
    "listen": "127.0.0.1:8102",
    "dyn_listen": "127.0.0.1:8101",
    "dyn_port": "8101",
    "servers": ["127.0.0.1:6379:1"],
    "data_store": "1",
    "tokens": "'101134286'",
    "dyn_seeds": ["127.0.0.2:8101:rack2:dc1:1383429731"],
    "dyn_seed_provider": "dns_provider",
    "datacenter": "dc1",
    "rack": "rack1",
    "env": "network",
    "hash": "md5",
    "hash_tag": '"{}"',
    "distribution": "vnode",
    "server_connections": "1",
    "timeout": "1000",
    "backlog": "1024",
    "client_connections": "100",
    "preconnect": "false",
    "auto_eject_hosts": "false",
    "server_retry_timeout": "30000",
    "server_failure_limit": "2",
    "dyn_read_timeout": "1000",
    "dyn_write_timeout": "1000",
    "dyn_connections": "10",
    "gos_interval": "10000",
    "enable_gossip": "true",
    "secure_server_option": "rack",
    "pem_key_file": "keys/dynomite.pem",
    "recon_key_file": "keys/recon_key.pem",
    "recon_iv_file": "keys/recon_iv.pem",
    "read_consistency": "DC_QUORUM",
    "write_consistency": "dc_safe_quorum",
    "read_repairs_enabled": "true",
    "stats_listen": "127.0.0.1:22223",
    "stats_interval": "10000",
    "mbuf_size": "8192",
    "max_msgs": "300000",
    "conn_msg_rate": "1000",
    "datastore_connections": "2",
    "local_peer_connections": "3",
    "remote_peer_connections": "4",
    "max_bulk_len": "1048576",
    "max_multibulk_len": "1000",
    "max_inline_len": "4096",
    "max_item_size": "2097152",
    "max_client_pipeline": "16",
    "shutdown_grace": "0",
    "feed_interval": "250",
    "admin_token": "s3cret",
    "tls_cert_file": "tls/node.crt",
    "tls_key_file": "tls/node.key",
    "tls_ca_file": "tls/ca.crt",
    "tls_handshake_timeout": "2000",
    "client_tls": "true",
    "client_tls_cert_file": "tls/client-listener.crt",
    "client_tls_key_file": "tls/client-listener.key",
    "client_tls_ca_file": "tls/clients-ca.crt",
    "client_tls_verify": "optional",
    "allowed_commands": ["replicaof", "config get"],
    "requirepass": "client-secret",
    "users": ["app:rw:app-pass", "report:ro:pa:ss"],
    "datastore_username": "trinomite",
    "datastore_password": "store-secret",
    "client_read_timeout": "5000",
    "client_idle_timeout": "60000",
    "client_output_buffer_limit": "1048576",
    "client_memory_budget": "268435456",
    "hinted_handoff": "false",
    "hints_dir": "/var/lib/trinomite/hints",
    "max_hint_window": "600000",
    "tombstone_grace": "86400000",
    "hints_max_bytes": "1048576",
    "hints_sync_interval": "100",
    "hint_replay_rate": "100",
}


def yaml_entry(key: str, value: str | list[str]) -> str:
    if isinstance(value, list):
        return f"  {key}:\n" + "".join(f"  - {item}\n" for item in value)
    return f"  {key}: {value}\n"


def config_with(**values: str | list[str]) -> str:
    """A document with ``values`` set; listen and servers default to BASE's."""
    values = {"listen": "127.0.0.1:8102", "servers": ["embedded:1"]} | values
    return "dyn_o_mite:\n" + "".join(yaml_entry(k, v) for k, v in values.items())


def load_text(tmp_path: Path, text: str) -> NodeConfig:
    path = tmp_path / "node.yml"
    path.write_text(text)
    return load_config(path)


def expect_error(
    tmp_path: Path, text: str, line: int, column: int, key: str | None, fragment: str
) -> ConfigError:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    where = f"{path}:{line}:{column}: "
    assert message.startswith(where + (f"key '{key}': " if key else "")), message
    assert fragment in message
    assert "\n" not in message
    assert (info.value.source, info.value.line, info.value.column) == (str(path), line, column)
    assert info.value.key == key
    return info.value


# ---- the table ---------------------------------------------------------------


def test_table_covers_every_dynomite_key_and_model_field():
    names = [key.name for key in KEYS]
    assert len(names) == len(set(names))
    assert set(DYNOMITE_KEYS) <= set(names)
    fields = {f.name for f in attrs.fields(NodeConfig)} - {"pool_name", "source"}
    assert {key.name for key in KEYS if key.stored} == fields
    assert {key.name for key in KEYS if key.extension} == set(names) - set(DYNOMITE_KEYS)
    assert set(SAMPLES) == set(names)


def test_docs_contain_the_generated_key_table():
    assert markdown_table() in (ROOT / "docs" / "configuration.md").read_text()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_key_accepts_its_sample(name):
    config = parse_config(config_with(**{name: SAMPLES[name]}))
    if KEYS_BY_NAME[name].stored:
        default = attrs.fields_dict(NodeConfig)[name].default
        assert getattr(config, name) != default


# ---- defaults and values -------------------------------------------------------

DYNOMITE_CODE_DEFAULTS = {
    "pool_name": "dyn_o_mite",
    "dyn_listen": None,
    "data_store": DataStore.REDIS,
    "tokens": (),
    "dyn_seeds": (),
    "dyn_seed_provider": "simple_provider",
    "datacenter": "localdc",
    "rack": "localrack",
    "hash": "murmur",
    "hash_tag": None,
    "timeout": 5000,
    "backlog": 512,
    "client_connections": 0,
    "preconnect": True,
    "auto_eject_hosts": True,
    "server_retry_timeout": 10000,
    "server_failure_limit": 3,
    "dyn_read_timeout": 10000,
    "dyn_write_timeout": 10000,
    "dyn_connections": 100,
    "gos_interval": 30000,
    "enable_gossip": False,
    "secure_server_option": SecureServerOption.NONE,
    "read_consistency": Consistency.DC_ONE,
    "write_consistency": Consistency.DC_ONE,
    "read_repairs_enabled": False,
    "stats_listen": HostPort("127.0.0.1", 22222),
    "stats_interval": 30000,
    "mbuf_size": 16384,
    "max_msgs": 200000,
    "conn_msg_rate": 50000,
    "datastore_connections": 1,
    "local_peer_connections": 1,
    "remote_peer_connections": 1,
}


@pytest.mark.parametrize(("field", "value"), DYNOMITE_CODE_DEFAULTS.items())
def test_defaults_are_dynomite_code_defaults(field, value):
    assert getattr(parse_config(BASE), field) == value


ZERO_IS_DEFAULT = [
    key.name for key in KEYS if key.parser.bounds is not None and not key.extension and key.stored
]


@pytest.mark.parametrize("name", ZERO_IS_DEFAULT)
def test_zero_means_the_default(name):
    config = parse_config(config_with(**{name: "0"}))
    assert getattr(config, name) == attrs.fields_dict(NodeConfig)[name].default


def test_timeout_zero_is_5000_and_extension_zero_is_zero():
    config = parse_config(config_with(timeout="0", shutdown_grace="0"))
    assert (config.timeout, config.shutdown_grace) == (5000, 0)


VALUES = [
    ("listen", "/tmp/trinomite.sock", UnixPath("/tmp/trinomite.sock")),
    ("listen", "'[::1]:8102'", HostPort("::1", 8102)),
    ("listen", "0.0.0.0:0", HostPort("0.0.0.0", 0)),
    ("stats_listen", "localhost:65535", HostPort("localhost", 65535)),
    ("servers", ["127.0.0.1:6379:1"], (DatastoreSpec.tcp("127.0.0.1", 6379),)),
    ("servers", ["'[::1]:6379:0 main'"], (DatastoreSpec("tcp", HostPort("::1", 6379), 0, "main"),)),
    (
        "servers",
        ["/var/run/redis.sock:1"],
        (DatastoreSpec("unix", UnixPath("/var/run/redis.sock")),),
    ),
    ("servers", ["embedded:1 demo"], (DatastoreSpec.embedded("demo"),)),
    ("servers", ["embedded:6379:1"], (DatastoreSpec.tcp("embedded", 6379),)),
    ("tokens", "101134286", (101134286,)),
    ("tokens", "'0, 2147483647'", (0, 2147483647)),
    ("tokens", f"'{UINT32_MAX}'", (UINT32_MAX,)),
    (
        "dyn_seeds",
        ["127.0.0.2:8101:rack2:dc1:1,2 peer2", "'[::1]:8101:r:d:0'"],
        (
            Seed("127.0.0.2", 8101, "rack2", "dc1", (1, 2), "peer2"),
            Seed("::1", 8101, "r", "d", (0,)),
        ),
    ),
    ("read_consistency", "dc_each_safe_quorum", Consistency.DC_EACH_SAFE_QUORUM),
    ("write_consistency", "Dc_Quorum", Consistency.DC_QUORUM),
    ("data_store", "1", DataStore.MEMCACHE),
    ("hash", "murmur3", "murmur3"),
    ("hash_tag", "'{}'", "{}"),
    ("secure_server_option", "datacenter", SecureServerOption.DATACENTER),
    ("timeout", '"250"', 250),
    ("preconnect", "false", False),
    ("mbuf_size", "512", 512),
    ("max_msgs", "1000000", 1000000),
    ("datastore_connections", "255", 255),
    ("client_connections", "10", 10),
]


@pytest.mark.parametrize(("name", "raw", "value"), VALUES)
def test_values(name, raw, value):
    assert getattr(parse_config(config_with(**{name: raw})), name) == value


def test_pool_name_and_source(tmp_path):
    config = load_text(tmp_path, BASE.replace("dyn_o_mite", "my_pool"))
    assert (config.pool_name, config.source) == ("my_pool", str(tmp_path / "node.yml"))


def test_flow_sequences_and_spaces_before_colons_are_accepted():
    config = parse_config("dyn_o_mite:\n  listen : 127.0.0.1:1\n  servers: [embedded:1]\n")
    assert config.servers == (DatastoreSpec.embedded(),)


# ---- one test per class of error ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("dyn_o_mite:\n  listen: [1\n", 3, 1, "YAML syntax error: while parsing a flow sequence"),
        (BASE + "  timeout: 1\n  timeout: 2\n", 6, 3, 'duplicate key "timeout"'),
        (BASE + "\ttimeout: 1\n", 5, 1, "YAML syntax error"),
        ("a: 1\n---\nb: 2\n", 2, 1, "expected a single document"),
    ],
)
def test_yaml_syntax_errors(tmp_path, text, line, column, fragment):
    expect_error(tmp_path, text, line, column, None, fragment)


@pytest.mark.parametrize(
    ("text", "line", "column", "key", "fragment"),
    [
        ("", 1, 1, None, "the file is empty, expected one root key"),
        ("# only a comment\n", 1, 1, None, "the file is empty"),
        ("- a\n- b\n", 1, 1, None, "found a list, expected one root key"),
        (BASE + "other:\n  listen: x\n", 5, 1, "other", "found a second root key"),
        ("dyn_o_mite: 1\n", 1, 13, "dyn_o_mite", "found '1', expected the settings"),
        ("dyn_o_mite:\n", 1, 1, "dyn_o_mite", "found an empty value, expected the settings"),
        (BASE + "  timeout:\n    a: 1\n", 6, 5, "timeout", "found a mapping, expected"),
        (BASE + "  dyn_seeds:\n  - [a, b]\n", 6, 5, "dyn_seeds", "found a list, expected host:"),
    ],
)
def test_structure_errors(tmp_path, text, line, column, key, fragment):
    expect_error(tmp_path, text, line, column, key, fragment)


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("timeuot", "unknown key (did you mean 'timeout'?)"),
        ("redis_requirepass", "unknown key (the datastore's password is datastore_password"),
        ("redis", "replaced by data_store: 0"),
        ("pool_name", "unknown key"),
        ("zzz", "unknown key (see docs/configuration.md)"),
    ],
)
def test_unknown_key(tmp_path, key, fragment):
    expect_error(tmp_path, BASE + f"  {key}: x\n", EXTRA_LINE, 3, key, fragment)


@pytest.mark.parametrize(
    ("key", "raw", "fragment"),
    [
        ("timeout", "abc", "found 'abc', expected a whole number of milliseconds"),
        ("timeout", "1.5", "expected a whole number of milliseconds"),
        ("timeout", "[1, 2]", "found a list, expected a whole number of milliseconds"),
        ("backlog", "!!int 5", "found a tagged value of type int (YAML tags are not supported)"),
        ("preconnect", "True", "found 'True', expected true or false (lowercase)"),
        ("enable_gossip", "yes", "expected true or false"),
        ("datacenter", "dc 1", "expected a name without spaces or ':'"),
        ("servers", "embedded:1", "found 'embedded:1', expected a list of entries like"),
    ],
)
def test_wrong_type(tmp_path, key, raw, fragment):
    text = "dyn_o_mite:\n  listen: 127.0.0.1:1\n" + f"  {key}: {raw}\n"
    if key != "servers":
        text += "  servers:\n  - embedded:1\n"
    expect_error(tmp_path, text, 3, 5 + len(key), key, fragment)


def test_empty_value_points_at_the_key(tmp_path):
    expect_error(tmp_path, BASE + "  timeout:\n", EXTRA_LINE, 3, "timeout", "found an empty value")


HOST_PORT_EXPECTED = "expected host:port with a port from 0 to 65535 (IPv6 as [addr]:port)"


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        ("dyn_listen", "127.0.0.1"),
        ("dyn_listen", "127.0.0.1:65536"),
        ("dyn_listen", "127.0.0.1:-1"),
        ("dyn_listen", "::1:8101"),
        ("dyn_listen", ":8101"),
        ("stats_listen", "'[::1]8101'"),
        ("stats_listen", "host:port"),
        ("listen", "relative/path.sock"),
    ],
)
def test_bad_host_port(tmp_path, key, raw):
    text = BASE.replace("  listen: 127.0.0.1:8102\n", "") + f"  {key}: {raw}\n"
    if key != "listen":
        text += "  listen: 127.0.0.1:1\n"
    error = expect_error(tmp_path, text, 4, 5 + len(key), key, HOST_PORT_EXPECTED)
    assert error.found == f"'{raw.strip(chr(39))}'"


@pytest.mark.parametrize(
    ("seed", "fragment"),
    [
        ("127.0.0.1:8101:rack1:dc1", "expected host:port:rack:dc:tokens [name]"),
        ("127.0.0.1:8101:rack1:dc1:0:x", "expected host:port:rack:dc:tokens [name]"),
        ("127.0.0.1:0:rack1:dc1:0", "with a port from 1 to 65535"),
        ("127.0.0.1:8101::dc1:0", "with non-empty rack and dc names"),
        ("127.0.0.1:8101:rack1:dc1:4294967296", "with tokens as comma-separated whole numbers"),
        ("127.0.0.1:8101:rack1:dc1:1,,2", "with tokens as comma-separated whole numbers"),
        ("127.0.0.1:8101:rack1:dc1:0 a b", "expected host:port:rack:dc:tokens [name]"),
    ],
)
def test_bad_seed(tmp_path, seed, fragment):
    good = "  - 127.0.0.1:8111:rack1:dc1:0\n"
    text = BASE + "  dyn_seeds:\n" + good + f"  - {seed}\n"
    expect_error(tmp_path, text, EXTRA_LINE + 2, 5, "dyn_seeds", fragment)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("127.0.0.1:6379", "expected host:port:weight [name], /unix/path:weight [name]"),
        ("127.0.0.1:6379:x", "with a whole-number weight (mandatory, ignored)"),
        ("127.0.0.1:0:1", "with a port from 1 to 65535"),
        ("/var/run/redis.sock", "expected host:port:weight"),
        ("embedded", "expected host:port:weight"),
        ("embedded:1 a b", "expected host:port:weight"),
    ],
)
def test_bad_servers_entry(tmp_path, entry, fragment):
    text = f"dyn_o_mite:\n  listen: 127.0.0.1:1\n  servers:\n  - {entry}\n"
    expect_error(tmp_path, text, 4, 5, "servers", fragment)


def test_more_than_one_server(tmp_path):
    text = BASE + "  - 127.0.0.1:6379:1\n"
    error = expect_error(tmp_path, text, EXTRA_LINE, 5, "servers", "expected a single entry")
    assert "one datastore per node" in str(error)


def test_no_server(tmp_path):
    text = "dyn_o_mite:\n  listen: 127.0.0.1:1\n  servers: []\n"
    expect_error(tmp_path, text, 3, 12, "servers", "found an empty list, expected at least 1")


@pytest.mark.parametrize("raw", ["dc_one_foo", "DC_ON", "one", "DC-QUORUM"])
@pytest.mark.parametrize("key", ["read_consistency", "write_consistency"])
def test_bad_consistency_name(tmp_path, key, raw):
    expected = "expected one of DC_ONE, DC_QUORUM, DC_SAFE_QUORUM, DC_EACH_SAFE_QUORUM (any case)"
    expect_error(tmp_path, BASE + f"  {key}: {raw}\n", EXTRA_LINE, 5 + len(key), key, expected)


@pytest.mark.parametrize("raw", ["murmur2", "MURMUR", "crc", "fnv"])
def test_bad_hash_name(tmp_path, raw):
    expect_error(tmp_path, BASE + f"  hash: {raw}\n", EXTRA_LINE, 9, "hash", "expected one of")


@pytest.mark.parametrize(
    ("raw", "found"), [("'{'", "'{'"), ("'{}}'", "'{}}'"), ("{}", "a mapping")]
)
def test_bad_hash_tag(tmp_path, raw, found):
    error = expect_error(
        tmp_path,
        BASE + f"  hash_tag: {raw}\n",
        EXTRA_LINE,
        13,
        "hash_tag",
        "exactly two characters",
    )
    assert error.found == found


@pytest.mark.parametrize(
    ("key", "raw", "fragment"),
    [
        ("tokens", "4294967296", "whole numbers from 0 to 4294967295"),
        ("tokens", "-1", "whole numbers from 0 to 4294967295"),
        ("datastore_connections", "256", "from 1 to 255"),
        ("local_peer_connections", "1000", "from 1 to 255"),
        ("remote_peer_connections", "-1", "from 1 to 255"),
        ("dyn_connections", "300", "from 1 to 255"),
        ("mbuf_size", "511", "from 512 to 512000 that is a multiple of 16"),
        ("mbuf_size", "1000", "that is a multiple of 16"),
        ("max_msgs", "99999", "from 100000 to 1000000"),
        ("data_store", "2", "one of 0, 1"),
        ("timeout", "-5", "from 1 to 2147483647 (0 means the default)"),
        ("timeout", "2147483648", "from 1 to 2147483647"),
        ("dyn_port", "65536", "from 1 to 65535"),
        ("max_bulk_len", "0", "from 1 to 4294967295"),
        ("shutdown_grace", "-1", "from 0 to 2147483647"),
    ],
)
def test_out_of_range(tmp_path, key, raw, fragment):
    error = expect_error(
        tmp_path, BASE + f"  {key}: {raw}\n", EXTRA_LINE, 5 + len(key), key, fragment
    )
    assert error.found == f"'{raw}'"


@pytest.mark.parametrize("raw", ["tls", "NONE", "dc", "rack_and_dc"])
def test_bad_secure_server_option(tmp_path, raw):
    key = "secure_server_option"
    text = BASE + f"  {key}: {raw}\n"
    expect_error(tmp_path, text, EXTRA_LINE, 25, key, "expected one of none, rack, datacenter, all")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("dyn_o_mite:\n  servers:\n  - embedded:1\n", "listen"),
        ("dyn_o_mite:\n  listen: 127.0.0.1:1\n", "servers"),
        ("dyn_o_mite:\n  rack: r1\n", "listen"),
    ],
)
def test_missing_required_key(tmp_path, text, key):
    expect_error(tmp_path, text, 1, 1, key, "missing, expected")


def test_unreadable_file(tmp_path):
    path = tmp_path / "absent.yml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read the file: No such file or directory"
    assert info.value.line is None


def test_first_error_in_file_order_and_missing_keys_last(tmp_path):
    text = "dyn_o_mite:\n  rack: 'a b'\n  timeout: x\n  zzz: 1\n"
    expect_error(tmp_path, text, 2, 9, "rack", "expected a name")
    text = "dyn_o_mite:\n  zzz: 1\n  timeout: x\n"
    expect_error(tmp_path, text, 2, 3, "zzz", "unknown key")


def test_error_attributes(tmp_path):
    error = expect_error(tmp_path, BASE + "  timeout: abc\n", 5, 12, "timeout", "found 'abc'")
    assert (error.found, error.expected) == ("'abc'", "a whole number of milliseconds")
    assert str(error) == f"{tmp_path / 'bad.yml'}:5:12: key 'timeout': " + (
        "found 'abc', expected a whole number of milliseconds"
    )


# ---- deprecated and ignored keys --------------------------------------------------

IGNORED = [key for key in KEYS if key.status is not Status.NORMAL]


def test_ignored_keys_are_the_documented_ones():
    assert {key.name for key in IGNORED} == {
        "distribution",
        "server_connections",
        "dyn_port",
        "dyn_read_timeout",
        "dyn_write_timeout",
        "dyn_connections",
        "auto_eject_hosts",
        "server_failure_limit",
        "recon_key_file",
        "recon_iv_file",
        "env",
        "mbuf_size",
    }


@pytest.mark.parametrize("key", IGNORED, ids=lambda key: key.name)
def test_ignored_key_warns(caplog, key):
    with caplog.at_level(logging.WARNING, logger="trinomite.config"):
        parse_config(BASE + yaml_entry(key.name, SAMPLES[key.name]), "x.yml")
    [record] = caplog.records
    assert record.name == "trinomite.config"
    assert record.getMessage() == (f"x.yml:5:3: key '{key.name}' is {key.status.value}: {key.why}")


def test_deprecated_key_accepts_a_list(caplog):
    with caplog.at_level(logging.WARNING, logger="trinomite.config"):
        parse_config(BASE + "  distribution:\n  - a\n")
    assert "key 'distribution' is deprecated" in caplog.text


def test_ignored_key_values_are_still_validated(tmp_path):
    expect_error(tmp_path, BASE + "  mbuf_size: 100\n", 5, 14, "mbuf_size", "from 512 to 512000")


def test_client_connections_is_not_ignored(caplog):
    with caplog.at_level(logging.WARNING, logger="trinomite.config"):
        config = parse_config(config_with(client_connections="3"))
    assert config.client_connections == 3
    assert not caplog.records


# ---- the shipped configuration files ----------------------------------------------


@pytest.mark.parametrize("path", CONF_FILES, ids=lambda path: path.name)
def test_conf_file_loads_cleanly(caplog, path):
    with caplog.at_level(logging.DEBUG, logger="trinomite.config"):
        config = load_config(path)
    assert not caplog.records
    assert config.pool_name == "dyn_o_mite"
    assert len(config.servers) == 1
    assert config.dyn_listen is not None
    assert config.tokens


def test_conf_files_exist():
    names = {path.name for path in CONF_FILES}
    assert {
        "redis_single.yml",
        "embedded_single.yml",
        "redis_rack1_node1.yml",
        "redis_rack1_node2.yml",
        "redis_rack2_node1.yml",
        "redis_rack2_node2.yml",
        "redis_dc1.yml",
        "redis_dc2.yml",
    } <= names


@pytest.mark.parametrize("group", ["redis_rack*_node*.yml", "redis_dc*.yml"])
def test_cluster_files_seed_each_other(group):
    """Each node's seeds are exactly the other nodes of its cluster."""
    configs = [load_config(path) for path in sorted((ROOT / "conf").glob(group))]
    assert len(configs) >= 2
    as_seed = {
        id(c): (c.dyn_listen.host, c.dyn_listen.port, c.rack, c.datacenter, c.tokens)
        for c in configs
        if c.dyn_listen is not None
    }
    for config in configs:
        seeds = {(s.host, s.port, s.rack, s.dc, s.tokens) for s in config.dyn_seeds}
        assert seeds == {v for k, v in as_seed.items() if k != id(config)}
    ports = [p for c in configs for p in (c.listen, c.dyn_listen, c.stats_listen)]
    assert len(set(ports)) == len(ports)


# ---- robustness -------------------------------------------------------------------


def outcome(text: str) -> ConfigError | None:
    try:
        parse_config(text)
    except ConfigError as error:
        return error
    return None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_config_or_a_config_error(text):
    error = outcome(text)
    assert error is None or "\n" not in str(error)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(SAMPLES)), value=st.text(max_size=40))
def test_any_value_is_accepted_or_a_config_error(key, value):
    # A JSON string is a YAML double-quoted scalar.
    error = outcome(config_with(**{key: json.dumps(value)}))
    assert error is None or (error.line is not None and "\n" not in str(error))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"users": ["a:rw:p", "a:ro:q"]}, "<string>:7:5: key 'users': user 'a' is defined twice"),
        (
            {"requirepass": "x", "users": ["default:ro:q"]},
            "key 'users': user 'default' is defined twice (requirepass is the default",
        ),
    ],
)
def test_client_users_are_each_defined_once(extra, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(config_with(**extra))
    assert message in str(caught.value)
