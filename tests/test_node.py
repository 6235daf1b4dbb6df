"""A single node through real clients: commands it answers, errors, limits, order."""

from __future__ import annotations

import socket

import pytest
import redis
import trio

from tests.conftest import client_for, in_thread, node_config
from trinomite import DatastoreSpec, HostPort, ListenSockets, Node, UnixPath, open_node
from trinomite.protocol.replies import ReplyFramer
from trinomite.protocol.requests import encode_command


class Raw:
    """A raw RESP connection: send exact bytes, read exact reply bytes."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.framer = ReplyFramer()

    @classmethod
    async def connect(cls, node: Node) -> Raw:
        address = node.client_address
        assert isinstance(address, HostPort)
        return cls(await trio.open_tcp_stream(address.host, address.port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def command(self, *args: bytes | str) -> bytes:
        await self.send(encode_command([a.encode() if isinstance(a, str) else a for a in args]))
        return await self.read(1)

    async def read(self, count: int) -> bytes:
        with trio.fail_after(10):
            while (replies := self.framer.take(count)) is None:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise EOFError(f"closed; buffered {self.framer.buffered} bytes")
                self.framer.feed(data)
        return replies

    async def closed(self) -> bool:
        with trio.fail_after(10):
            return await self.stream.receive_some(1) == b""

    async def aclose(self) -> None:
        await self.stream.aclose()


@pytest.fixture(params=["redis", "embedded"])
async def node(request, redis_backend):
    spec = (
        DatastoreSpec.tcp(redis_backend.host, redis_backend.port)
        if request.param == "redis"
        else DatastoreSpec.embedded()
    )
    async with open_node(node_config(spec)) as running:
        yield running


async def test_redis_py_defaults_resp3(node):
    client = client_for(node)  # redis-py 8 default: HELLO 3, CLIENT SETINFO
    assert await in_thread(client.set, "k", "v")
    assert await in_thread(client.get, "k") == b"v"
    assert await in_thread(client.hset, "h", mapping={"a": "1", "b": "2"}) == 2
    assert await in_thread(client.hgetall, "h") == {b"a": b"1", b"b": b"2"}
    info = await in_thread(client.client_info)
    assert info["resp"] == "3"
    assert info["lib-name"].startswith("redis-py")


async def test_redis_py_resp2_with_name(node):
    client = client_for(node, protocol=2, client_name="worker-1")
    assert await in_thread(client.incr, "n") == 1
    assert await in_thread(client.client_getname) == "worker-1"
    assert await in_thread(client.client_id) > 0
    assert await in_thread(client.ping)
    assert await in_thread(client.echo, "hi") == b"hi"


async def test_node_answered_commands(node):
    raw = await Raw.connect(node)
    assert await raw.command("PING") == b"+PONG\r\n"
    assert await raw.command("PING", "hello") == b"$5\r\nhello\r\n"
    assert await raw.command("ECHO", "x") == b"$1\r\nx\r\n"
    assert await raw.command("SELECT", "0") == b"+OK\r\n"
    assert (await raw.command("SELECT", "1")).startswith(b"-ERR trinomite serves only database 0")
    assert await raw.command("HELLO", "4") == b"-NOPROTO unsupported protocol version\r\n"
    hello2 = await raw.command("HELLO", "2")
    assert hello2.startswith(b"*16\r\n$6\r\nserver\r\n$5\r\nredis\r\n")
    hello3 = await raw.command("HELLO", "3")
    assert hello3.startswith(b"%8\r\n")
    assert b"$5\r\nproto\r\n:3\r\n" in hello3
    assert await raw.command("CLIENT", "SETINFO", "LIB-NAME", "x") == b"+OK\r\n"
    assert (await raw.command("CLIENT", "SETINFO", "BOGUS", "x")).startswith(b"-ERR Unrecognized")
    assert await raw.command("CLIENT", "GETNAME") == b"_\r\n"  # RESP3 null after HELLO 3
    assert (await raw.command("CLIENT", "KILL", "x")).startswith(
        b"-ERR unsupported CLIENT subcommand 'kill'"
    )
    assert await raw.command("dyno_config:conn_consistency", "dc_quorum") == b"+OK\r\n"
    assert (await raw.command("dyno_config:conn_consistency", "dc_bogus")).startswith(b"-ERR")
    assert (await raw.command("AUTH", "pw")).startswith(b"-ERR AUTH <password> called without")
    await raw.aclose()


async def test_command_introspection(node):
    client = client_for(node, protocol=2)
    count = await in_thread(client.command_count)
    assert count > 150
    info = await in_thread(client.command)
    assert info["get"]["arity"] == 2
    assert info["mset"]["step_count"] == 2
    assert "readonly" in info["get"]["flags"]
    raw = await Raw.connect(node)
    assert (await raw.command("COMMAND", "DOCS", "get")).startswith(b"*2\r\n$3\r\nget\r\n")
    assert await raw.command("COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2") == (
        b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    )
    await raw.aclose()


async def test_errors_keep_the_connection_open(node):
    raw = await Raw.connect(node)
    assert await raw.command("FOO", "bar") == (
        b"-ERR unknown command 'FOO', with args beginning with: 'bar' \r\n"
    )
    assert (await raw.command("MULTI")).startswith(
        b"-ERR unsupported command 'multi': transactions"
    )
    assert (await raw.command("CONFIG", "SET", "x", "y")).startswith(
        b"-NOPERM trinomite does not forward 'config set'"
    )
    assert (await raw.command("CONFIG", "HELP")).startswith(
        b"-ERR unsupported command 'config help'"
    )
    assert await raw.command("GET") == b"-ERR wrong number of arguments for 'get' command\r\n"
    assert (await raw.command("FLUSHALL")).startswith(b"-ERR unsupported command 'flushall'")
    assert await raw.command("SET", "still", "open") == b"+OK\r\n"
    await raw.aclose()


async def test_config_get_and_local_commands(node):
    client = client_for(node, protocol=2)
    assert "save" in await in_thread(client.config_get, "save")
    await in_thread(client.set, "a", "1")
    assert await in_thread(client.dbsize) >= 1
    assert b"a" in await in_thread(client.keys, "*")
    assert "redis_version" in await in_thread(client.info, "server")


async def test_pipeline_order_with_mixed_commands(node):
    raw = await Raw.connect(node)
    stream = b"".join(
        [
            encode_command([b"SET", b"x", b"1"]),
            encode_command([b"PING"]),
            encode_command([b"INCR", b"x"]),
            encode_command([b"NOPE"]),
            encode_command([b"GET", b"x"]),
            encode_command([b"ECHO", b"e"]),
            encode_command([b"GET"]),
            encode_command([b"GET", b"x"]),
        ]
    )
    await raw.send(stream)
    replies = ReplyFramer()
    replies.feed(await raw.read(8))
    assert replies.replies() == [
        b"+OK\r\n",
        b"+PONG\r\n",
        b":2\r\n",
        b"-ERR unknown command 'NOPE', with args beginning with: \r\n",
        b"$1\r\n2\r\n",
        b"$1\r\ne\r\n",
        b"-ERR wrong number of arguments for 'get' command\r\n",
        b"$1\r\n2\r\n",
    ]
    await raw.aclose()


async def test_inline_commands(node):
    raw = await Raw.connect(node)
    await raw.send(b'SET greeting "hello world"\r\nGET greeting\r\nPING\n')
    assert await raw.read(3) == b"+OK\r\n$11\r\nhello world\r\n+PONG\r\n"
    await raw.aclose()


async def test_quit_replies_then_closes(node):
    raw = await Raw.connect(node)
    await raw.send(encode_command([b"SET", b"q", b"1"]) + b"QUIT\r\n" + b"GET q\r\n")
    assert await raw.read(2) == b"+OK\r\n+OK\r\n"
    assert await raw.closed()


async def test_protocol_error_replies_then_closes_and_others_unaffected(node):
    bystander = await Raw.connect(node)
    assert await bystander.command("SET", "b", "1") == b"+OK\r\n"
    bad = await Raw.connect(node)
    await bad.send(encode_command([b"SET", b"x", b"1"]) + b"*1\r\n$abc\r\n")
    assert await bad.read(2) == b"+OK\r\n-ERR Protocol error: invalid bulk length\r\n"
    assert await bad.closed()
    assert await bystander.command("GET", "b") == b"$1\r\n1\r\n"
    await bystander.aclose()


async def test_bulk_limit_is_configurable(redis_backend):
    config = node_config(
        DatastoreSpec.tcp(redis_backend.host, redis_backend.port), max_bulk_len=1000
    )
    async with open_node(config) as node:
        raw = await Raw.connect(node)
        assert await raw.command("SET", "k", "v" * 1000) == b"+OK\r\n"
        await raw.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1001\r\n")
        assert await raw.read(1) == b"-ERR Protocol error: invalid bulk length\r\n"
        assert await raw.closed()


async def test_large_values_and_long_pipelines(node):
    client = client_for(node, protocol=2)
    big = b"x" * (5 * 1024 * 1024)
    assert await in_thread(client.set, "big", big)
    assert await in_thread(client.get, "big") == big

    def pipeline() -> list[object]:
        pipe = client.pipeline(transaction=False)
        for i in range(3000):
            pipe.set(f"p{i}", i)
            pipe.get(f"p{i}")
        return pipe.execute()

    results = await in_thread(pipeline)
    assert results[1::2] == [str(i).encode() for i in range(3000)]


async def test_max_client_pipeline_slices_preserve_order(redis_backend):
    config = node_config(
        DatastoreSpec.tcp(redis_backend.host, redis_backend.port), max_client_pipeline=7
    )
    async with open_node(config) as node:
        raw = await Raw.connect(node)
        await raw.send(b"".join(encode_command([b"INCR", b"c"]) for _ in range(100)))
        assert await raw.read(100) == b"".join(b":%d\r\n" % i for i in range(1, 101))


async def test_many_concurrent_clients(node):
    async def worker(i: int) -> None:
        raw = await Raw.connect(node)
        for j in range(20):
            key = f"c{i}:{j}"
            assert await raw.command("SET", key, str(j)) == b"+OK\r\n"
            assert await raw.command("GET", key) == b"$%d\r\n%d\r\n" % (len(str(j)), j)
        await raw.aclose()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(worker, i)


async def test_scripting_and_redis_py_errors(redis_node):
    client = client_for(redis_node, protocol=2)
    assert await in_thread(client.eval, "return redis.call('SET', KEYS[1], ARGV[1])", 1, "s", "v")
    sha = await in_thread(client.script_load, "return KEYS[1]")
    assert await in_thread(client.evalsha, sha, 1, "kk") == b"kk"
    assert await in_thread(client.script_exists, sha) == [True]
    await in_thread(client.lpush, "l", "1")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        await in_thread(client.get, "l")


async def test_unix_socket_listener(tmp_path):
    path = str(tmp_path / "node.sock")
    config = node_config(DatastoreSpec.embedded(), listen=UnixPath(path))
    async with open_node(config) as node:
        assert node.client_address == UnixPath(path)

        def use() -> tuple[object, object]:
            client = redis.Redis(unix_socket_path=path, protocol=2)
            return client.set("u", "1"), client.get("u")

        assert await in_thread(use) == (True, b"1")


def _bound_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


async def test_node_adopts_sockets_bound_by_the_embedder():
    """Ports known before start (as seeds need them) are served, and closed on exit."""
    client_sock, peer_sock = _bound_socket(), _bound_socket()
    client_port, peer_port = client_sock.getsockname()[1], peer_sock.getsockname()[1]
    config = node_config(
        DatastoreSpec.embedded(),
        listen=HostPort("127.0.0.1", client_port),
        dyn_listen=HostPort("127.0.0.1", peer_port),
    )
    async with open_node(config, sockets=ListenSockets(client_sock, peer_sock)) as node:
        assert node.client_address == HostPort("127.0.0.1", client_port)
        assert node.peer_address == HostPort("127.0.0.1", peer_port)
        client = client_for(node, protocol=2)
        assert await in_thread(client.set, "adopted", "1") is True
        assert await in_thread(client.get, "adopted") == b"1"
    assert client_sock.fileno() == -1
    assert peer_sock.fileno() == -1
    # The ports are free again: a fresh socket can listen on them.
    for port in (client_port, peer_port):
        again = _bound_socket(port)
        again.listen(1)
        again.close()


async def test_node_adopts_a_socket_for_port_zero():
    sock = _bound_socket()
    port = sock.getsockname()[1]
    async with open_node(
        node_config(DatastoreSpec.embedded()), sockets=ListenSockets(sock)
    ) as node:
        assert node.client_address == HostPort("127.0.0.1", port)


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("other-port", "is bound to 127.0.0.1:"),
        ("other-host", "is bound to 127.0.0.1:"),
        ("unbound", "is not bound"),
        ("unix", "was given for listen"),
    ],
)
async def test_node_refuses_a_socket_bound_elsewhere(listen, message):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if listen != "unbound":
        sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    address = {
        "other-port": HostPort("127.0.0.1", port + 1 if port < 65535 else port - 1),
        "other-host": HostPort("127.0.0.2", port),
        "unbound": HostPort("127.0.0.1", 0),
        "unix": UnixPath("/nonexistent/node.sock"),
    }[listen]
    config = node_config(DatastoreSpec.embedded(), listen=address)
    with pytest.raises(ValueError, match=message):
        async with open_node(config, sockets=ListenSockets(sock)):
            pass  # pragma: no cover - never started
    assert sock.fileno() == -1  # the node owned it, even though it never started
