"""Several nodes: how long a message sent through node B takes to reach a subscriber on node A.

    .venv/bin/python -m bench.cluster [--backend asyncio|trio|both] [--messages 300] [--quick]

Two hub processes share one PostgreSQL database (`PARLEY_TEST_POSTGRES_URL`, default the local
`test` database) and one Redis (`PARLEY_TEST_REDIS_URL`, default redis://127.0.0.1:6379/0). A
sender posts `messages.send` over HTTP JSON-RPC, paced, and a receiver holds an `events.subscribe`
stream; latency runs from just before the send to the event's arrival. The floor is the same
measurement with sender and receiver on the same node of the same cluster, so the ratio is what
crossing nodes through Redis adds. Target (issue #6): p99 <= 100 ms.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import anyio

from tests.client import HubClient
from tests.messaging import direct, event_socket, send
from tests.servers import HubServer, drop_postgres_database, start_nodes

from .report import Figure, add_common_options, backends, emit, percentile

TARGET_P99_MS = 100.0
PACE_SECONDS = 0.005


async def delivery_latencies(sender_node: HubServer, receiver_node: HubServer, messages: int) -> list[float]:
    """Seconds from each send (through `sender_node`) to its event on `receiver_node`."""
    async with HubClient(sender_node) as sender_hub, HubClient(receiver_node) as receiver_hub:
        receiver = await receiver_hub.register("receiver")
        sender = await sender_hub.register("sender")
        conversation_id = await direct(sender_hub, sender, receiver)
        sent_at: dict[str, float] = {}
        latencies: list[float] = []
        async with event_socket(receiver_node, receiver, after=None) as stream:

            async def receive() -> None:
                for _ in range(messages):
                    event = await stream.next()
                    latencies.append(time.perf_counter() - sent_at[event["message"]["body"]])

            async with anyio.create_task_group() as tg:
                tg.start_soon(receive)
                for i in range(messages):
                    sent_at[f"m{i}"] = time.perf_counter()
                    await send(sender_hub, sender, conversation_id, f"m{i}")
                    await anyio.sleep(PACE_SECONDS)
        return latencies


def measure(backend: str, messages: int) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="parley-bench-cluster-") as base:
        nodes = start_nodes(backend, Path(base), 2, redis_url=os.environ["PARLEY_TEST_REDIS_URL"],
                            redis_channel=f"parley-bench-{os.getpid()}")
        try:
            node_a, node_b = nodes
            same_node = anyio.run(delivery_latencies, node_a, node_a, messages)
            cross_node = anyio.run(delivery_latencies, node_b, node_a, messages)
        finally:
            for node in nodes:
                node.stop()
            drop_postgres_database(nodes[0].database_url)
    figures = []
    for name, fraction in (("p50", 0.5), ("p99", 0.99)):
        value = percentile(cross_node, fraction) * 1000
        figures.append(Figure(
            scenario="cluster", metric=f"B->A delivery {name}", value=value, unit="ms", backend=backend,
            floor=percentile(same_node, fraction) * 1000, floor_name="same node",
            target=f"p99 <= {TARGET_P99_MS:.0f} ms" if name == "p99" else "",
            met=value <= TARGET_P99_MS if name == "p99" else None, details={"messages": messages},
        ))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_options(parser)
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()
    os.environ.setdefault("PARLEY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    os.environ.setdefault("PARLEY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    messages = 50 if args.quick else args.messages
    emit([figure for backend in backends(args.backend) for figure in measure(backend, messages)],
         json_path=args.json_path)


if __name__ == "__main__":
    main()
