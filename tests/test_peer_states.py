"""Node states apply to requests from peers too, not only to clients."""

from __future__ import annotations

import pytest
import redis

from tests.conftest import in_thread
from trinomite.admin.api import NodeState
from trinomite.testing.cluster import open_cluster

REFUSED = "Dynomite: Dynomite's current state does not allow this request"


async def test_a_standby_peer_refuses_what_a_coordinator_sends_it():
    async with open_cluster({"dc1": {"r1": 2}}, datastore="redis") as cluster:
        coordinator, other = cluster.rack("dc1", "r1")
        key = next(
            f"k{i}" for i in range(1000) if cluster.owner("dc1", "r1", f"k{i}".encode()) is other
        )
        client = coordinator.client(protocol=2)
        assert await in_thread(client.set, key, "1")
        assert other.node is not None
        other.node.admin.set_state(NodeState.STANDBY)
        with pytest.raises(redis.ResponseError, match=REFUSED):
            await in_thread(client.get, key)
        with pytest.raises(redis.ResponseError, match=REFUSED):
            await in_thread(client.set, key, "2")
        assert other.node.gate.refused == 2
        other.node.admin.set_state(NodeState.NORMAL)
        assert await in_thread(client.get, key) == b"1"


def test_encrypted_peer_links_are_not_silently_plaintext(tmp_path):
    from trinomite import DatastoreSpec, HostPort, Node, NodeConfig
    from trinomite.config.model import SecureServerOption, Seed

    config = NodeConfig(
        listen=HostPort("127.0.0.1", 0),
        servers=(DatastoreSpec.embedded(),),
        tokens=(0,),
        dyn_seeds=(Seed("127.0.0.1", 1, "r2", "dc1", (0,)),),
        secure_server_option=SecureServerOption.DATACENTER,
        pem_key_file=str(tmp_path / "missing.pem"),
    )
    # No key and no certificate: the node refuses to start instead of running plaintext.
    with pytest.raises(ValueError, match=r"pem_key_file: .*missing\.pem: No such file") as info:
        Node(config)
    assert "python -m trinomite certs shared-key" in str(info.value)


def test_gossip_and_seed_provider_settings_take_effect(caplog):
    """Once announced as unbuilt; now a gossiping node starts JOINING, as a cluster."""
    from trinomite import DatastoreSpec, HostPort, Node, NodeConfig
    from trinomite.admin.api import NodeState

    config = NodeConfig(
        listen=HostPort("127.0.0.1", 0),
        servers=(DatastoreSpec.embedded(),),
        enable_gossip=True,
        dyn_seed_provider="florida_provider",
        read_repairs_enabled=True,
    )
    node = Node(config)
    assert "not implemented" not in caplog.text
    assert node.gate.state is NodeState.JOINING  # NORMAL once gossip says it is safe
    assert node.dispatcher.cluster  # members may join at any time
    assert node.hints is not None
