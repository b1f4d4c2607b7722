"""Scenario 6, connections: N idle WebSocket connections authenticated with an access token at the
upgrade; the hub's memory per connection = (hub VmRSS after - VmRSS before) / N.

    .venv/bin/python -m bench.connections [--backend asyncio|trio|both] [--connections 10000]
                                          [--agents 100] [--quick] [--json PATH]

`--agents` agents share the connections (the hub allows several connections per agent and
token; registering 10,000 agents would only measure argon2). "Before" is read after the agents
exist and a first batch of connections has come and gone (so the hub's one-off allocations for
serving a WebSocket at all are not counted); "after" once all N are open and the hub has been idle
for a moment. At the end a sample of the connections makes a call, which proves they are open and
authenticated. Floor: the bare WebSocket echo server of the same stack with the same N idle
connections.

The client is one process: a hand-framed asyncio protocol per connection, about 2 KiB each, and
no task per connection; opening is limited by the server's handshakes (CPU-bound at ~1 core),
not the client. The file limit (20,000 here) allows 10,000 sockets on each side.
"""

import argparse
import asyncio
import random
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from bench.clients import (
    WsClient,
    call,
    open_many,
    register_agents,
    round_trip,
    rss_kib,
    run,
    running_hub,
    until_idle,
)
from bench.floors import FloorServer
from bench.report import Figure, add_common_options, backends, emit

SCENARIO = "connections"
WARM_UP: Final = 200
SAMPLE: Final = 50

Probe = Callable[[WsClient], Awaitable[Any]]
"""A round trip on one connection that shows it is open (and, on the hub, authenticated)."""


@dataclass(frozen=True)
class Run:
    connections: int
    kib_per_connection: float
    rss_before_kib: int
    rss_after_kib: int
    open_per_s: float


async def idle_connections(url: str, tokens: list[str | None], pid: int, probe: Probe) -> Run:
    """Open a batch and close it (warm-up), read RSS, open them all, settle, read RSS, probe a sample."""
    warm = await open_many(url, tokens[:WARM_UP])
    await _close_all(warm, pid)
    before = rss_kib(pid)
    loop = asyncio.get_running_loop()
    started = loop.time()
    conns = await open_many(url, tokens)
    opened = loop.time() - started
    await until_idle(pid)
    after = rss_kib(pid)
    try:
        await asyncio.gather(*(probe(conn) for conn in random.sample(conns, min(SAMPLE, len(conns)))))
        assert not any(conn.closed.done() for conn in conns), "the server closed idle connections"
    finally:
        await _close_all(conns, pid)
    return Run(len(conns), (after - before) / len(conns), before, after, len(conns) / opened)


async def _close_all(conns: list[WsClient], pid: int) -> None:
    """Close every connection and wait until the server has dealt with it (10,000 closes take a while;
    a server stopped before that may not stop in time)."""
    for conn in conns:
        conn.close()
    await until_idle(pid)


async def hub_run(backend: str, connections: int, agents: int) -> Run:
    with running_hub(backend) as server:
        registered = await register_agents(server, agents, "idle")
        tokens: list[str | None] = [registered[i % agents].access_token for i in range(connections)]
        assert server.process is not None
        return await idle_connections(server.ws_url, tokens, server.process.pid, lambda conn: call(conn, "auth.whoami"))


async def floor_run(backend: str, connections: int) -> Run:
    with FloorServer(backend) as floor:
        return await idle_connections(floor.url + "/echo", [None] * connections, floor.pid,
                                      lambda conn: round_trip(conn, "ping"))


def figures(backend: str, hub: Run, floor: Run) -> list[Figure]:
    targeted = backend == "asyncio"
    enough = hub.connections >= 10_000
    details = {"connections": hub.connections, "hub_rss_kib": [hub.rss_before_kib, hub.rss_after_kib],
               "floor_rss_kib": [floor.rss_before_kib, floor.rss_after_kib]}
    return [
        Figure(SCENARIO, "memory per connection", hub.kib_per_connection, "KiB", backend, floor.kib_per_connection,
               "bare ws server", "<= 20 KiB at >= 10000" if targeted else "",
               (enough and hub.kib_per_connection <= 20) if targeted else None, details),
        Figure(SCENARIO, "connections opened/s", hub.open_per_s, "conn/s", backend, floor.open_per_s,
               "bare ws server"),
    ]


def measure(backend: str, connections: int, agents: int) -> list[Figure]:
    hub = run(hub_run(backend, connections, agents))
    floor = run(floor_run(backend, connections))
    return figures(backend, hub, floor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_options(parser)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=100, help="agents sharing the connections")
    args = parser.parse_args()
    connections, agents = (500, 10) if args.quick else (args.connections, args.agents)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if connections + 100 > soft:
        parser.error(f"{connections} connections need more than the file limit ({soft}) allows")
    emit([f for backend in backends(args.backend) for f in measure(backend, connections, agents)],
         json_path=args.json_path)


if __name__ == "__main__":
    main()
