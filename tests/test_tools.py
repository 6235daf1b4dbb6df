"""Stock Redis tools through a node: ``redis-cli`` and ``redis-benchmark``.

The tools run as subprocesses (``trio.run_process``, so the node keeps
serving in this Trio run) with bounded timeouts.  Where the output does not
depend on the server's identity, the same invocation is also run against a
bare redis-server and the outputs must be identical.
"""

from __future__ import annotations

import re

import pytest
import trio

from trinomite import Node
from trinomite.testing import RedisServer

from .rawclient import node_address
from .test_differential import direct_backend_fixture

__all__ = ["direct_backend_fixture"]  # a fixture, shared with the differential tests

TOOL_TIMEOUT = 20
RATE = re.compile(r"\b(SET|GET): ([0-9.]+) requests per second")


async def run_tool(tool: str, address: tuple[str, int], *args: str, stdin: bytes = b"") -> str:
    """Run ``tool -h HOST -p PORT args...``; returns stdout (exit status must be 0)."""
    host, port = address
    with trio.fail_after(TOOL_TIMEOUT):
        done = await trio.run_process(
            [tool, "-h", host, "-p", str(port), *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode(errors="replace")


async def cli(address: tuple[str, int], *args: str, stdin: bytes = b"") -> str:
    return await run_tool("redis-cli", address, *args, stdin=stdin)


def direct(server: RedisServer) -> tuple[str, int]:
    return server.host, server.port


async def test_redis_cli_basic_commands(redis_node: Node) -> None:
    node = node_address(redis_node)
    assert await cli(node, "PING") == "PONG\n"
    assert await cli(node, "SET", "greeting", "hello world") == "OK\n"
    assert await cli(node, "GET", "greeting") == "hello world\n"
    assert await cli(node, "INCR", "visits") == "1\n"
    assert await cli(node, "INCR", "visits") == "2\n"
    assert await cli(node, "GET", "nokey") == "\n"


async def test_redis_cli_unknown_command_keeps_the_connection(redis_node: Node) -> None:
    """redis-cli reads commands from a pipe over one connection; an error does not end it."""
    script = b"CLIENT ID\nSET a 1\nNOSUCHCMD x\nGET a\nINCR a\nCLIENT ID\n"
    lines = (await cli(node_address(redis_node), stdin=script)).splitlines()
    assert lines[1:6] == [
        "OK",
        "ERR unknown command 'NOSUCHCMD', with args beginning with: 'x' ",
        "",
        "1",
        "2",
    ]
    assert lines[0] == lines[6], "the commands after the error used another connection"


@pytest.mark.parametrize("mode", ["--raw", "--no-raw"])
async def test_redis_cli_output_matches_redis(
    redis_node: Node, direct_backend: RedisServer, mode: str
) -> None:
    script = (
        b"RPUSH list a 'b c' 3\nLRANGE list 0 -1\nHSET h f v\nHGETALL h\n"
        b"ZADD z 1.5 m\nZRANGE z 0 -1 WITHSCORES\nGET nokey\nLPUSH h x\nGET\n"
        b"NOSUCHCMD\nMGET list nokey\nEXISTS list h z nokey\nTYPE z\n"
    )
    via_node = await cli(node_address(redis_node), mode, stdin=script)
    assert via_node == await cli(direct(direct_backend), mode, stdin=script)
    assert "WRONGTYPE" in via_node
    assert "b c" in via_node


@pytest.mark.parametrize("pipeline", ["1", "16"])
async def test_redis_benchmark_through_node(redis_node: Node, pipeline: str) -> None:
    """redis-benchmark sends CONFIG GET first, then SET/GET load (``-P``: pipelined)."""
    node = node_address(redis_node)
    output = await run_tool(
        "redis-benchmark", node, "-q", "-t", "set,get", "-n", "2000", "-c", "10", "-P", pipeline
    )
    rates = dict(RATE.findall(output))
    assert set(rates) == {"SET", "GET"}, output
    assert all(float(rate) > 0 for rate in rates.values()), output
    assert await cli(node, "STRLEN", "key:__rand_int__") == "3\n"  # benchmark's SET payload
