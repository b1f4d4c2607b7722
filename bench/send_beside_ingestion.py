"""Send beside ingestion (issue 16): the send scenario's load on one hub, alone and then while a
document store ingests; the ratio says what a busy ingestion takes from messaging.

    .venv/bin/python -m bench.send_beside_ingestion [--backend asyncio|trio|both] [--documents 4000]
                                                    [--quick] [--json PATH]

One hub, as `parley serve` runs by default (SQLite; the embedding model on when it is installed).
First the send load of `bench.send` (16 agents pipelining `messages.send` over WebSocket, 16 in
flight each) runs alone. Then another agent adds `--documents` generated documents (about 300 words
each, through `documents.add` in JSON-RPC batches of 50); once their ingestion is under way, the same
send load runs again. The figure is acked messages/s beside ingestion, with the rate alone as its
floor: 1.0× means ingestion takes nothing from messaging. Its details say how many documents were
ingested while the send ran, and whether ingestion was still busy when it ended (so the whole
measurement ran beside it).
"""

import argparse
import asyncio
import random
from typing import Any, Final

from bench.clients import open_ws, register_agents, run, running_hub
from bench.hubs import Rpc
from bench.report import Figure, add_common_options, backends, emit
from bench.send import Run, Sizes, paired, pipelined

SCENARIO: Final = "send beside ingestion"
BATCH: Final = 50
WORDS: Final = 300


def generated_documents(count: int) -> list[dict[str, str]]:
    """`count` documents of `WORDS` words drawn from a made-up vocabulary (the same every run)."""
    rng = random.Random(7)
    syllables = ["ka", "lo", "mi", "ser", "ta", "vin", "dor", "pe", "lu", "ran", "te", "sol"]
    vocabulary = ["".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(3000)]
    return [{"title": f"Report {number}", "text": " ".join(rng.choices(vocabulary, k=WORDS)) + "."}
            for number in range(count)]


async def add_all(rpc: Rpc, documents: list[dict[str, str]]) -> None:
    for first in range(0, len(documents), BATCH):
        await rpc.batch([("documents.add", document) for document in documents[first:first + BATCH]])


async def measure_pair(backend: str, sizes: Sizes, documents: int) -> tuple[Run, Run, dict[str, Any]]:
    with running_hub(backend) as server:
        assert server.process is not None
        agents = await register_agents(server, sizes.agents, "sender")
        conversation_ids = await paired(server, agents)
        conns = [await open_ws(server.ws_url, agent.access_token) for agent in agents]
        librarian = Rpc(server)
        try:
            await librarian.register("librarian")
            alone = await pipelined(conns, conversation_ids, sizes, server.process.pid, warm_up=sizes.messages // 10)
            adding = asyncio.create_task(add_all(librarian, generated_documents(documents)))
            before = await librarian.until("documents.status", lambda status: status["processed"] > 0)
            beside = await pipelined(conns, conversation_ids, sizes, server.process.pid, warm_up=0)
            after = await librarian.call("documents.status")
            await adding
        finally:
            for conn in conns:
                conn.close()
            await librarian.close()
    details = {"documents": documents, "ingested_during_send": after["processed"] - before["processed"],
               "ingestion_busy_at_the_end": after["state"] == "in_progress", "alone_cpu": alone.cpu,
               "beside_cpu": beside.cpu}
    return alone, beside, details


def figures(backend: str, alone: Run, beside: Run, details: dict[str, Any]) -> list[Figure]:
    return [
        Figure(SCENARIO, "acked messages/s", beside.rate, "msg/s", backend, alone.rate, "send alone",
               details=details),
        Figure(SCENARIO, "ack p99", beside.p99_ms, "ms", backend, alone.p99_ms, "send alone"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_options(parser)
    parser.add_argument("--documents", type=int, default=4000, help="documents added beside the send load")
    args = parser.parse_args()
    sizes = Sizes(16, 100 if args.quick else 2000, 16)
    documents = 200 if args.quick else args.documents
    emit([figure for backend in backends(args.backend)
          for figure in figures(backend, *run(measure_pair(backend, sizes, documents)))], json_path=args.json_path)


if __name__ == "__main__":
    main()
