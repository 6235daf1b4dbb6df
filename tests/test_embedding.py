"""Embedding a node as a new user would, from the README: ports, errors, imports."""

from __future__ import annotations

import socket

import pytest
import trio

from trinomite import DatastoreSpec, HostPort, ListenError, NodeConfig, open_node, parse_config
from trinomite.node import serve_node

from .conftest import client_for, in_thread


def embedded(**overrides) -> NodeConfig:
    overrides.setdefault("listen", HostPort("127.0.0.1", 0))
    return NodeConfig(servers=(DatastoreSpec.embedded(),), **overrides)


async def test_embedded_nodes_get_ephemeral_admin_ports_and_report_them():
    async with open_node(embedded()) as first, open_node(embedded()) as second:
        assert first.admin_address is not None
        assert second.admin_address is not None
        assert first.admin_address.port != 0
        assert first.admin_address != second.admin_address
        assert await in_thread(client_for(first).ping)


def test_a_config_file_without_stats_listen_keeps_dynomites_port():
    config = parse_config("dyn_o_mite:\n  listen: 127.0.0.1:0\n  servers:\n  - embedded:1\n")
    assert config.stats_listen == HostPort("127.0.0.1", 22222)


@pytest.mark.parametrize("key", ["stats_listen", "listen"])
async def test_a_port_in_use_is_one_clear_error_naming_it(key):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        config = embedded(**{key: HostPort("127.0.0.1", port)})
        with pytest.raises(ListenError) as info:  # not an ExceptionGroup
            async with open_node(config):
                pass
        assert f"cannot listen on 127.0.0.1:{port} ({key}): Address already in use" in str(
            info.value
        )
        async with trio.open_nursery() as nursery:
            with pytest.raises(ListenError):  # nursery.start gets it unwrapped
                await nursery.start(serve_node, config)
    finally:
        taken.close()


def test_open_cluster_is_importable_from_trinomite_testing():
    from trinomite.testing import open_cluster

    assert callable(open_cluster)


async def test_a_starting_cluster_logs_no_refused_connects(caplog):
    from trinomite.testing import open_cluster

    with trio.fail_after(10):
        async with open_cluster({"dc1": {"r1": 2, "r2": 2}}):
            pass
    assert "connect failed" not in caplog.text
