"""Scenario 2, fan-out: one sender into a 100-member group whose members all hold a live
`events.subscribe` stream; deliveries/s at the maximum rate, then end-to-end latency (send ->
receipt, per delivery) p50/p99 with the sender paced at half that rate.

    .venv/bin/python -m bench.fanout [--backend asyncio|trio|both] [--members 100] [--messages 300]
                                     [--window 16] [--paced-seconds 5] [--quick] [--json PATH]

The sender pipelines `messages.send` (`--window` in flight); each member counts the `event`
notifications it gets, and reads the send time the sender wrote into the body (a clock shared by
one client process) without decoding the whole frame. The maximum rate is measured from the first
send to the last delivery. The paced phase sends at half the hub's measured rate.

Floor: the same stack's bare WebSocket broadcast (bench.floors `/fanout`): every frame from the
sender goes to the 100 receivers (a queue and a writer task each) and back to the sender as its
ack; driven by the same client, and paced at the same rate as the hub in the latency phase, so the
two latencies are compared at the same load.

Where the limit is: see each figure's `details` (CPU of the server and the client, 1.0 = a core).
The receivers' side is a counter and a `bytes.find` per frame, so the client stays far below the
server; the hub is CPU-bound.
"""

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from bench.clients import (
    Pipeline,
    ProcessMeter,
    WsClient,
    call,
    hub_call,
    open_many,
    open_ws,
    register_agents,
    rpc_frame,
    run,
    running_hub,
)
from bench.floors import FloorServer
from bench.report import Figure, add_common_options, backends, emit, percentile

SCENARIO = "fanout"
STAMP: Final = b'"body":"t'
"""Where a frame carries its send time: the body is `t<perf_counter_ns>`."""
DRAIN_TIMEOUT: Final = 120.0


@dataclass(frozen=True)
class Sizes:
    members: int
    messages: int
    window: int
    paced_seconds: float


@dataclass
class Receivers:
    """What the members received: a count, and with `timing` each delivery's latency."""

    expected: int
    received: int = 0
    timing: bool = False
    latencies: list[float] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def on_message(self, payload: bytes) -> None:
        start = payload.find(STAMP)
        if start < 0:
            return  # a heartbeat, or a response
        self.received += 1
        if self.timing:
            start += len(STAMP)
            sent_ns = int(payload[start: payload.index(b'"', start)])
            self.latencies.append((time.perf_counter_ns() - sent_ns) / 1e9)
        if self.received >= self.expected:
            self.done.set()

    def expect(self, deliveries: int, *, timing: bool) -> None:
        self.expected, self.received, self.timing, self.latencies = deliveries, 0, timing, []
        self.done.clear()


@dataclass(frozen=True)
class Run:
    deliveries_per_s: float
    paced_rate: float
    """Messages/s in the paced phase."""
    p50_ms: float
    p99_ms: float
    cpu: dict[str, float]
    paced_cpu: dict[str, float]


FrameOf = Callable[[int], str]


def stamped(frame_of: Callable[[int, str], str]) -> FrameOf:
    """Request `i` carrying the current time in its body."""
    return lambda i: frame_of(i, f"t{time.perf_counter_ns()}")


async def max_rate(sender: WsClient, receivers: Receivers, frame_of: FrameOf, sizes: Sizes,
                   pid: int) -> tuple[float, dict[str, float]]:
    receivers.expect(sizes.messages * sizes.members, timing=False)
    meter = ProcessMeter(pid)
    # Frames are made as they go out (not in advance), so each carries the time it was sent.
    frames = ((i, frame_of(i)) for i in range(1, sizes.messages + 1))
    await Pipeline(sender, sizes.window).run(frames, sizes.messages)
    async with asyncio.timeout(DRAIN_TIMEOUT):
        await receivers.done.wait()
    cpu = meter.read()
    return receivers.received / meter.elapsed, cpu


async def paced(sender: WsClient, receivers: Receivers, frame_of: FrameOf, rate: float, sizes: Sizes,
                pid: int) -> tuple[list[float], dict[str, float]]:
    count = max(1, int(rate * sizes.paced_seconds))
    receivers.expect(count * sizes.members, timing=True)
    sender.on_message = lambda payload: None  # acks are not waited for: the pace sets the load
    meter = ProcessMeter(pid)
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sender.send(frame_of(i + 1_000_000))
    async with asyncio.timeout(DRAIN_TIMEOUT):
        await receivers.done.wait()
    return receivers.latencies, meter.read()


async def measure_phases(sender: WsClient, receivers: Receivers, frame_of: FrameOf, sizes: Sizes, pid: int,
                         paced_rate: float | None) -> Run:
    """Warm up, the maximum rate, then the paced phase (at `paced_rate`, or half the maximum)."""
    warm = Sizes(sizes.members, max(1, sizes.messages // 10), sizes.window, 0)
    await max_rate(sender, receivers, frame_of, warm, pid)
    deliveries_per_s, cpu = await max_rate(sender, receivers, frame_of, sizes, pid)
    rate = paced_rate or deliveries_per_s / sizes.members / 2
    latencies, paced_cpu = await paced(sender, receivers, frame_of, rate, sizes, pid)
    return Run(deliveries_per_s, rate, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000,
               cpu, paced_cpu)


async def hub_run(backend: str, sizes: Sizes) -> Run:
    with running_hub(backend) as server:
        sender, *members = await register_agents(server, sizes.members + 1, "fanout")
        created = await hub_call(server, sender, "conversations.create_group",
                                 {"title": "fan-out", "members": [m.agent_id for m in members]})
        conversation_id = created["conversation_id"]
        receivers = Receivers(expected=0)
        conns = await open_many(server.ws_url, [m.access_token for m in members])
        await asyncio.gather(*(call(conn, "events.subscribe") for conn in conns))
        for conn in conns:
            conn.on_message = receivers.on_message
        sender_conn = await open_ws(server.ws_url, sender.access_token)

        def frame_of(i: int, body: str) -> str:
            return rpc_frame(i, "messages.send", {"conversation_id": conversation_id, "body": body})

        assert server.process is not None
        try:
            return await measure_phases(sender_conn, receivers, stamped(frame_of), sizes, server.process.pid, None)
        finally:
            for conn in [sender_conn, *conns]:
                conn.close()


async def floor_run(backend: str, sizes: Sizes, paced_rate: float) -> Run:
    with FloorServer(backend) as floor:
        receivers = Receivers(expected=0)
        conns = await open_many(floor.url + "/fanout/recv", [None] * sizes.members)
        for conn in conns:
            conn.on_message = receivers.on_message
        sender_conn = await open_ws(floor.url + "/fanout/send")

        def frame_of(i: int, body: str) -> str:  # the same frame as to the hub
            return rpc_frame(i, "messages.send", {"conversation_id": "cnv_floor", "body": body})

        try:
            return await measure_phases(sender_conn, receivers, stamped(frame_of), sizes, floor.pid, paced_rate)
        finally:
            for conn in [sender_conn, *conns]:
                conn.close()


def figures(backend: str, sizes: Sizes, hub: Run, floor: Run) -> list[Figure]:
    targeted = backend == "asyncio"
    details = {"members": sizes.members, "messages": sizes.messages, "window": sizes.window,
               "hub_cpu": hub.cpu, "floor_cpu": floor.cpu}
    paced_details = {"paced_messages_per_s": round(hub.paced_rate, 1), "seconds": sizes.paced_seconds,
                     "hub_cpu": hub.paced_cpu, "floor_cpu": floor.paced_cpu}
    return [
        Figure(SCENARIO, "deliveries/s", hub.deliveries_per_s, "deliv/s", backend, floor.deliveries_per_s,
               "ws broadcast", ">= 50000/s" if targeted else "",
               hub.deliveries_per_s >= 50_000 if targeted else None, details),
        Figure(SCENARIO, "e2e p50 @ half load", hub.p50_ms, "ms", backend, floor.p50_ms, "ws broadcast",
               details=paced_details),
        Figure(SCENARIO, "e2e p99 @ half load", hub.p99_ms, "ms", backend, floor.p99_ms, "ws broadcast",
               "<= 100 ms" if targeted else "", hub.p99_ms <= 100 if targeted else None),
    ]


def measure(backend: str, sizes: Sizes) -> list[Figure]:
    hub = run(hub_run(backend, sizes))
    floor = run(floor_run(backend, sizes, hub.paced_rate))
    return figures(backend, sizes, hub, floor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_options(parser)
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--messages", type=int, default=300, help="sent at the maximum rate")
    parser.add_argument("--window", type=int, default=16, help="sends in flight")
    parser.add_argument("--paced-seconds", type=float, default=5.0)
    args = parser.parse_args()
    sizes = Sizes(args.members, 30 if args.quick else args.messages, args.window,
                  1.0 if args.quick else args.paced_seconds)
    emit([f for backend in backends(args.backend) for f in measure(backend, sizes)], json_path=args.json_path)


if __name__ == "__main__":
    main()
