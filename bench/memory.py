"""Agent memory (issue 11): recall quality on LoCoMo, and speed with 100,000 memories in one scope.

    .venv/bin/python -m bench.memory [--quick] [--stores sqlite,postgres] [--scale N]

Quality. For each store, a real hub (`parley serve`, asyncio backend) gets each LoCoMo conversation's
turns as memories through `memories.create` over HTTP JSON-RPC, one agent per conversation; every
question (categories 1-4) is asked through `memories.search` in each mode, and evidence recall@5/@10/@20
is reported beside the floor computed in the same run: plain BM25 (SQLite FTS5 `bm25()`, porter
tokenizer, the query's words OR-ed) over the same turns. Targets: lexical recall@5 >= 0.52, hybrid
>= 0.58.

Speed. One agent's private scope is filled with `--scale` memories (100,000; LoCoMo turns with a
number, so none is a duplicate) through `memories.create` in JSON-RPC batches. Their vectors are then
written straight into the store (random unit vectors: a search's cost does not depend on what the
vectors say, and computing 100,000 real ones would take this machine several minutes), and the hub is
restarted on it. Measured, one request at a time: `memories.create` (500 more, each embedded in the
background meanwhile), then, once those are embedded, `memories.search` lexical and hybrid (the LoCoMo
questions), each p50/p99 beside `auth.whoami` through the same client
(what any call costs before it touches memory). Targets: create p99 <= 20 ms, search p99 <= 30 ms
lexical, <= 60 ms hybrid. Disk per 100,000 memories (database and WAL) and the hub's resident memory
after the searches (its vector cache included) are reported too.
"""

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from statistics import mean
from typing import Final

from bench.clients import rss_kib
from bench.datasets import Conversation, MissingData, PlainBm25, evidence_recall, locomo
from bench.hubs import Rpc, database_url, fill_vectors, hub, run_on_stores, timed
from bench.report import Figure, percentile
from hub.retrieval.embeddings import DIMENSION, installed
from tests.servers import HubServer, drop_postgres_database, make_server, postgres_available

SCENARIO: Final = "memory"
MODES: Final = ("lexical", "semantic", "hybrid")
RECALL_AT: Final = (5, 10, 20)
TARGETS: Final = {"lexical": 0.52, "hybrid": 0.58}
BATCH: Final = 100
SPEED_TARGET_MS: Final = {"memories.create": 20.0, "search lexical": 30.0, "search hybrid": 60.0}


async def remember_all(rpc: Rpc, texts: list[str], concurrency: int = 2) -> None:
    chunks = [texts[at:at + BATCH] for at in range(0, len(texts), BATCH)]
    gate = asyncio.Semaphore(concurrency)

    async def one(chunk: list[str]) -> None:
        async with gate:
            await rpc.batch([("memories.create", {"content": text}) for text in chunk])

    await asyncio.gather(*(one(chunk) for chunk in chunks))


# -- quality --------------------------------------------------------------------------------------------------


async def quality(server: HubServer, conversations: list[Conversation],
                  modes: tuple[str, ...]) -> dict[str, dict[int, float]]:
    scores: dict[str, dict[int, list[float]]] = {mode: {k: [] for k in RECALL_AT} for mode in (*modes, "floor")}
    for conversation in conversations:
        rpc = Rpc(server)
        try:
            await rpc.register("locomo")
            text_of = {turn.dia_id: turn.text for turn in conversation.turns}
            await remember_all(rpc, [turn.text for turn in conversation.turns])
            if set(modes) - {"lexical"}:
                distinct = len(set(text_of.values()))
                await rpc.until("memories.stats", lambda stats, distinct=distinct: stats["embedded"] >= distinct)
            plain = PlainBm25(text_of)
            for question in conversation.questions:
                for mode in modes:
                    found = await rpc.call("memories.search", {"query": question.text, "mode": mode, "limit": 20})
                    texts = [hit["memory"]["content"] for hit in found["items"]]
                    for k in RECALL_AT:
                        scores[mode][k].append(evidence_recall(texts, question, text_of, k))
                floor_texts = [text_of[key] for key in plain.search(question.text, 20)]
                for k in RECALL_AT:
                    scores["floor"][k].append(evidence_recall(floor_texts, question, text_of, k))
        finally:
            await rpc.close()
    return {mode: {k: mean(values) for k, values in by_k.items()} for mode, by_k in scores.items()}


def quality_figures(store: str, scores: dict[str, dict[int, float]], questions: int) -> list[Figure]:
    figures = []
    for mode in scores:
        if mode == "floor":
            continue
        for k in RECALL_AT:
            target = TARGETS.get(mode) if k == 5 else None
            figures.append(Figure(
                SCENARIO, f"locomo evidence recall@{k}, {mode} ({store})", scores[mode][k], "", "asyncio",
                floor=scores["floor"][k], floor_name="plain BM25 (FTS5)",
                target=f">= {target}" if target else "", met=scores[mode][k] >= target if target else None,
                details={"questions": questions}))
    return figures


# -- speed ----------------------------------------------------------------------------------------------------


async def speed(store: str, scale: int, conversations: list[Conversation], base: Path, quick: bool) -> list[Figure]:
    turns = [turn.text for conversation in conversations for turn in conversation.turns]
    questions = [question.text for conversation in conversations for question in conversation.questions]
    texts = [f"{turns[i % len(turns)]} (note {i})" for i in range(scale)]
    data_dir = base / f"speed-{store}"
    data_dir.mkdir()
    server = make_server("asyncio", store, data_dir, embeddings="off")
    server.launch()
    rpc = Rpc(server)
    try:
        await rpc.register("scale")
        started = time.perf_counter()
        await remember_all(rpc, texts)
        load_seconds = time.perf_counter() - started
        server.stop()
        fill_vectors(database_url(server))
        server.env["PARLEY_EMBEDDINGS"] = "on"
        server.launch()
        await rpc.call("auth.whoami")
        rounds = 100 if quick else 500
        floor = await timed(rpc, [("auth.whoami", {})] * rounds)
        create = await timed(rpc, [("memories.create", {"content": f"fresh memory number {i} about {turns[i]}"})
                                   for i in range(rounds)])
        # Searches are measured once the new memories are embedded: beside the background embedding (the model
        # busy on one of two cores, the bench client on the other) every p99 here doubles or triples.
        await rpc.until("memories.stats", lambda stats: stats["embedded"] >= sum(c["count"] for c in stats["counts"]))
        await rpc.call("memories.search", {"query": "warm up", "mode": "hybrid"})  # loads the model and the vectors
        searches = questions[: (100 if quick else len(questions))]
        lexical = await timed(rpc, [("memories.search", {"query": q, "mode": "lexical"}) for q in searches])
        hybrid = await timed(rpc, [("memories.search", {"query": q, "mode": "hybrid"}) for q in searches])
        rss = rss_kib(server.process.pid) if server.process else 0
        disk = sum(path.stat().st_size for path in data_dir.glob("parley.db*")) if store == "sqlite" else None
    finally:
        await rpc.close()
        server.stop()
        if server.database_url:
            drop_postgres_database(server.database_url)
    details = {"memories": scale, "load_seconds": round(load_seconds, 1),
               "load_per_second": round(scale / load_seconds)}
    figures = []
    for name, samples in (("memories.create", create), ("search lexical", lexical), ("search hybrid", hybrid)):
        for fraction, label in ((0.5, "p50"), (0.99, "p99")):
            target = SPEED_TARGET_MS[name] if label == "p99" else None
            value = percentile(samples, fraction)
            figures.append(Figure(
                SCENARIO, f"{name} {label} at {scale:,} ({store})", value, "ms", "asyncio",
                floor=percentile(floor, fraction), floor_name="auth.whoami",
                target=f"<= {target:g} ms" if target else "", met=value <= target if target else None,
                details=details))
    per_100k = 100_000 / scale
    figures.append(Figure(SCENARIO, f"hub resident memory ({store}, {scale:,} memories)", rss / 1024, "MiB",
                          "asyncio", details={"vectors_cached_mib": round(scale * DIMENSION * 4 / 2**20, 1)}))
    if disk is not None:
        figures.append(Figure(SCENARIO, "disk per 100,000 memories (sqlite, db + wal)", disk * per_100k / 2**20, "MiB",
                              "asyncio"))
    return figures


async def main_async(args: argparse.Namespace) -> list[Figure]:
    try:
        conversations = locomo()
    except MissingData as missing:
        raise SystemExit(f"bench.memory: {missing}") from None
    stores = [store for store in args.stores.split(",") if store != "postgres" or postgres_available() is None]
    modes = MODES if installed() else ("lexical",)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="parley-bench-memory-") as tmp:
        base = Path(tmp)
        for store in stores:
            data_dir = base / f"quality-{store}"
            data_dir.mkdir()
            with hub(store, data_dir) as server:
                scores = await quality(server, conversations, modes)
            figures += quality_figures(store, scores, sum(len(c.questions) for c in conversations))
            print(f"quality on {store}: " + ", ".join(f"{mode} {s[5]:.3f}" for mode, s in scores.items()), flush=True)
        for store in stores:
            figures += await speed(store, args.scale or (5_000 if args.quick else 100_000), conversations, base,
                                   args.quick)
    return figures


def main() -> None:
    run_on_stores(__doc__, main_async, "--scale", "memories in the scope for the speed part (default 100,000)")

if __name__ == "__main__":
    main()
