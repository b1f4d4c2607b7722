"""Webhooks (issue 14): signed deliveries per second, and what a delivery costs beside a bare HTTP POST.

    .venv/bin/python -m bench.webhooks [--quick] [--stores sqlite,postgres] [--deliveries N]

A real hub (`parley serve`, asyncio backend, PARLEY_OUTBOUND_ALLOW=127.0.0.1) has an endpoint subscribed
to `message.created` on a receiver in this process (asyncio, HTTP/1.1 keep-alive, 204 at once). A peer
sends the owner `--deliveries` messages (500) in JSON-RPC batches of 50; the figure is deliveries
received per second, from the first send to the last delivery. Its floor: as many POSTs of a body of
the same size, signed the same way, from httpx (the library the hub sends with) in this process to the
same receiver, as many at once as the hub sends (`webhook_concurrency`, 32). Latency: one message at a
time, from `messages.send` to its delivery received, p50 and p99, beside one bare POST.
"""

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Final

import httpx

from bench.hubs import Rpc, hub, run_on_stores
from bench.report import Figure, percentile
from hub import webhook_signing
from tests.servers import HubServer, postgres_available

SCENARIO: Final = "webhooks"
BATCH: Final = 50
CONCURRENCY: Final = 32


class Receiver:
    """The smallest HTTP/1.1 server that answers every POST 204 and notes when each arrived."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.arrived = asyncio.Event()
        self.body_bytes = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                self.body_bytes = len(await reader.readexactly(length))
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
                self.arrivals.append(time.perf_counter())
                self.arrived.set()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the hub hung up, or the bench is over (its keep-alive connections are dropped)
        finally:
            writer.close()

    async def wait_for(self, count: int, limit: float = 600.0) -> float:
        """When the `count`-th request arrived."""
        deadline = time.monotonic() + limit
        while len(self.arrivals) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(self.arrivals)} of {count} deliveries arrived in {limit:.0f} s")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout=1.0)
            except TimeoutError:
                pass
        return self.arrivals[count - 1]


async def bare_posts(url: str, body: bytes, count: int) -> tuple[float, list[float]]:
    """Posts per second with CONCURRENCY at once, then single-post latencies (ms)."""
    secret = webhook_signing.new_secret()
    async with httpx.AsyncClient() as client:
        queue = list(range(count))

        async def worker() -> None:
            while queue:
                n = queue.pop()
                headers = webhook_signing.headers([secret], f"bench-{n}", int(time.time()), body)
                (await client.post(url, content=body, headers=headers)).raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        rate = count / (time.perf_counter() - started)
        latencies = []
        for n in range(min(count, 200)):
            begun = time.perf_counter()
            headers = webhook_signing.headers([secret], f"one-{n}", int(time.time()), body)
            (await client.post(url, content=body, headers=headers)).raise_for_status()
            latencies.append((time.perf_counter() - begun) * 1000)
    return rate, latencies


async def measure(server: HubServer, deliveries: int, quick: bool) -> list[Figure]:
    receiver = Receiver()
    url = f"http://127.0.0.1:{await receiver.start()}/hook"
    owner, peer = Rpc(server), Rpc(server)
    try:
        owner_id = await owner.register("owner")
        await peer.register("peer")
        await owner.call("webhooks.create", {"url": url, "event_types": ["message.created"]})
        # The peer's sends reach the owner's stream (and the peer's own, which has no endpoint).
        started = time.perf_counter()
        for first in range(0, deliveries, BATCH):
            await peer.batch([("messages.send", {"to": owner_id, "body": f"hello {n}"})
                              for n in range(first, min(first + BATCH, deliveries))])
        last = await receiver.wait_for(deliveries)
        rate = deliveries / (last - started)
        rounds = 50 if quick else 200
        latencies = []
        for n in range(rounds):
            begun = time.perf_counter()
            await peer.call("messages.send", {"to": owner_id, "body": f"one {n}"})
            latencies.append((await receiver.wait_for(deliveries + n + 1) - begun) * 1000)
        body = b"x" * receiver.body_bytes  # a delivery's size, for the floor
        floor_rate, floor_latencies = await bare_posts(url, body, deliveries)
    finally:
        await owner.close()
        await peer.close()
        await receiver.close()
    details = {"deliveries": deliveries, "body_bytes": len(body), "concurrency": CONCURRENCY}
    figures = [Figure(SCENARIO, f"signed deliveries per second ({server.store})", rate, "deliveries/s", "asyncio",
                      floor=floor_rate, floor_name="bare signed httpx POST/s", details=details)]
    for fraction, label in ((0.5, "p50"), (0.99, "p99")):
        figures.append(Figure(SCENARIO, f"message sent to its delivery received, {label} ({server.store})",
                              percentile(latencies, fraction), "ms", "asyncio",
                              floor=percentile(floor_latencies, fraction), floor_name="one bare httpx POST",
                              details={"rounds": rounds}))
    return figures


async def main_async(args: argparse.Namespace) -> list[Figure]:
    stores = [store for store in args.stores.split(",") if store != "postgres" or postgres_available() is None]
    deliveries = args.deliveries or (100 if args.quick else 500)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="parley-bench-webhooks-") as tmp:
        for store in stores:
            data_dir = Path(tmp) / store
            data_dir.mkdir()
            with hub(store, data_dir, embeddings="off", outbound_allow="127.0.0.1") as server:
                figures += await measure(server, deliveries, args.quick)
            print(f"{store}: {figures[-3].value:.0f} deliveries/s ({figures[-3].ratio:.2f}x bare POSTs)", flush=True)
    return figures


def main() -> None:
    run_on_stores(__doc__, main_async, "--deliveries", "messages sent, each one delivery (default 500)")

if __name__ == "__main__":
    main()
