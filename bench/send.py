"""Scenario 1, send: N agents pipelining `messages.send` over WebSocket JSON-RPC into direct
conversations; acknowledged (committed) messages/s and ack latency p50/p99.

    .venv/bin/python -m bench.send [--backend asyncio|trio|both] [--agents 16] [--messages 2000]
                                   [--window 16] [--quick] [--json PATH]

Each agent has its own connection and keeps `--window` requests in flight (the hub allows up to
`ws_max_in_flight`, 64); an answer means the message is committed. Agents are paired into direct
conversations, both of a pair sending. Floors, measured in the same run:

- a bare WebSocket echo server on the same server stack (bench.floors), driven by the same client
  with the same frames and window: what the transport alone costs;
- the bare SQLite group-commit insert loop of bench.store_writes (as many writes, as many
  concurrent writers as requests in flight): what the store alone costs.

Latency is Little's law at work: total in flight / throughput. 16 agents x 16 in flight keeps the
group commit's batches full while the queueing stays well under the 50 ms target; a window of 64
adds throughput only where the commit, not the CPU, is the limit (it is not: see below).

Where the limit is: the `details` of each figure give the CPU the hub and the client used (1.0 =
one of the two cores), and `hub_writer` what the hub's store writer did over the measured phase
(from its /metrics): writes per batch, the share of the time it was busy, and per write its wall time
and its thread's CPU time (wall well above CPU: the writer waits for the interpreter lock). The hub
process is CPU-bound near 1 core (Python, one process); the client stays well below, so it is not the
bottleneck.
"""

import argparse
import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from bench.clients import (
    Pipeline,
    ProcessMeter,
    WsClient,
    hub_call,
    open_ws,
    register_agents,
    rpc_frame,
    run,
    running_hub,
    writer_counters,
    writer_figures,
)
from bench.floors import FloorServer
from bench.report import Figure, add_common_options, backends, emit, percentile
from bench.store_writes import group_commit
from tests.client import Agent
from tests.servers import HubServer

SCENARIO = "send"
RATE_TARGET = 6000
"""Acknowledged messages/s on asyncio (issue 16)."""
TRIO_SHARE_TARGET = 0.75
"""Trio's rate as a share of asyncio's in the same run (issue 16)."""


@dataclass(frozen=True)
class Sizes:
    agents: int
    messages: int
    """Per agent."""
    window: int

    @property
    def total(self) -> int:
        return self.agents * self.messages


@dataclass(frozen=True)
class Run:
    rate: float
    p50_ms: float
    p99_ms: float
    cpu: dict[str, float]
    writer: dict[str, float] = field(default_factory=dict)
    """The hub's writer over the measured phase (`writer_figures`); empty for the floor."""


def send_frames(conversation_id: str, count: int, first_id: int = 1) -> list[tuple[int, str]]:
    return [(i, rpc_frame(i, "messages.send", {"conversation_id": conversation_id, "body": f"bench message {i}"}))
            for i in range(first_id, first_id + count)]


async def pipelined(conns: list[WsClient], conversation_ids: list[str], sizes: Sizes, server_pid: int,
                    *, warm_up: int, counters: Callable[[], dict[str, float]] | None = None) -> Run:
    """Every connection sends its frames through its own pipeline; first `warm_up` unmeasured ones.
    `counters` reads the hub's writer counters, around the measured phase."""
    if warm_up:
        await asyncio.gather(*(Pipeline(conn, sizes.window).run(send_frames(cid, warm_up, first_id=10_000_000))
                               for conn, cid in zip(conns, conversation_ids, strict=True)))
    before = counters() if counters else {}
    meter = ProcessMeter(server_pid)
    results = await asyncio.gather(*(Pipeline(conn, sizes.window).run(send_frames(cid, sizes.messages))
                                     for conn, cid in zip(conns, conversation_ids, strict=True)))
    cpu = meter.read()
    writer = writer_figures(before, counters(), meter.elapsed) if counters else {}
    latencies = [latency for per_conn in results for latency in per_conn]
    return Run(rate=len(latencies) / meter.elapsed, p50_ms=percentile(latencies, 0.5) * 1000,
               p99_ms=percentile(latencies, 0.99) * 1000, cpu=cpu, writer=writer)


async def paired(server: HubServer, agents: list[Agent]) -> list[str]:
    """Agents paired into direct conversations: the conversation of each agent, in their order."""
    conversation_ids = []
    for first, second in zip(agents[::2], agents[1::2], strict=True):
        opened = await hub_call(server, first, "conversations.open_direct", {"agent": second.handle})
        conversation_ids += [opened["conversation_id"]] * 2
    return conversation_ids


async def hub_run(backend: str, sizes: Sizes) -> Run:
    with running_hub(backend) as server:
        agents = await register_agents(server, sizes.agents, "sender")
        conversation_ids = await paired(server, agents)
        conns = [await open_ws(server.ws_url, agent.access_token) for agent in agents]
        assert server.process is not None
        try:
            return await pipelined(conns, conversation_ids, sizes, server.process.pid, warm_up=sizes.messages // 10,
                                   counters=lambda: writer_counters(server))
        finally:
            for conn in conns:
                conn.close()


async def echo_run(backend: str, sizes: Sizes) -> Run:
    with FloorServer(backend) as floor:
        conns = [await open_ws(floor.url + "/echo") for _ in range(sizes.agents)]
        conversation_ids = [f"cnv_floor{i}" for i in range(sizes.agents)]
        try:
            return await pipelined(conns, conversation_ids, sizes, floor.pid, warm_up=sizes.messages // 10)
        finally:
            for conn in conns:
                conn.close()


def store_floor(backend: str, sizes: Sizes) -> float:
    """Committed writes/s of the bare group-commit loop, with as many writers as requests in flight."""
    with tempfile.TemporaryDirectory() as tmp:
        rate, _ = anyio.run(group_commit, f"sqlite:///{Path(tmp) / 'floor.db'}", sizes.total,
                            sizes.agents * sizes.window, backend=backend)
    return rate


def figures(backend: str, sizes: Sizes, hub: Run, echo: Run, store_rate: float) -> list[Figure]:
    targeted = backend == "asyncio"
    details = {"agents": sizes.agents, "messages": sizes.total, "window": sizes.window,
               "hub_cpu": hub.cpu, "hub_writer": hub.writer, "echo_cpu": echo.cpu}
    return [
        Figure(SCENARIO, "acked messages/s", hub.rate, "msg/s", backend, echo.rate, "ws echo",
               f">= {RATE_TARGET}/s" if targeted else "", hub.rate >= RATE_TARGET if targeted else None, details),
        Figure(SCENARIO, "acked messages/s", hub.rate, "msg/s", backend, store_rate, "sqlite group commit"),
        Figure(SCENARIO, "ack p50", hub.p50_ms, "ms", backend, echo.p50_ms, "ws echo"),
        Figure(SCENARIO, "ack p99", hub.p99_ms, "ms", backend, echo.p99_ms, "ws echo",
               "<= 50 ms" if targeted else "", hub.p99_ms <= 50 if targeted else None),
    ]


def measure(backend: str, sizes: Sizes) -> list[Figure]:
    store_rate = store_floor(backend, sizes)
    echo = run(echo_run(backend, sizes))
    hub = run(hub_run(backend, sizes))
    return figures(backend, sizes, hub, echo, store_rate)


def add_size_options(parser: argparse.ArgumentParser) -> None:
    """`--agents`, `--messages` and `--window`, read back by `sizes_of`."""
    parser.add_argument("--agents", type=int, default=16, help="connections, one agent each (even)")
    parser.add_argument("--messages", type=int, default=2000, help="per agent")
    parser.add_argument("--window", type=int, default=16, help="requests in flight per connection (<= 64)")


def sizes_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Sizes:
    sizes = Sizes(args.agents, 100 if args.quick else args.messages, args.window)
    if sizes.agents % 2:
        parser.error("--agents must be even: agents are paired into direct conversations")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_options(parser)
    add_size_options(parser)
    args = parser.parse_args()
    sizes = sizes_of(parser, args)
    measured = [f for backend in backends(args.backend) for f in measure(backend, sizes)]
    emit(measured + trio_share(measured), json_path=args.json_path)


def trio_share(measured: list[Figure]) -> list[Figure]:
    """Trio's acknowledged rate against asyncio's of the same run, when both ran."""
    rates = {f.backend: f.value for f in measured if f.metric == "acked messages/s"}
    if not {"asyncio", "trio"} <= rates.keys():
        return []
    share = rates["trio"] / rates["asyncio"]
    return [Figure(SCENARIO, "acked messages/s", rates["trio"], "msg/s", "trio", rates["asyncio"], "asyncio, same run",
                   f">= {TRIO_SHARE_TARGET}x", share >= TRIO_SHARE_TARGET)]


if __name__ == "__main__":
    main()
