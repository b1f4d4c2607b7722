"""The document store (issue 12): quality on SciFact, ingestion rate, search speed, and upload memory.

    .venv/bin/python -m bench.documents [--quick] [--stores sqlite,postgres] [--scale N]

Quality. For each store, a real hub (`parley serve`, asyncio backend) gets SciFact's 5,183 abstracts
through `documents.add` over HTTP JSON-RPC (batches of 100), and every dev claim is asked through
`documents.search` with `group_by_document` (two pages of 50). nDCG@10 and recall@100 per mode are
reported beside the floor computed in the same run: plain BM25 (SQLite FTS5 `bm25()`, porter
tokenizer, the query's words OR-ed) over the same abstracts. Targets: lexical nDCG@10 >= the floor
and >= 0.66 on both stores, hybrid >= 0.70.

Ingestion rate: documents per second from the first `documents.add` until `documents.status` says
the round is completed, with embeddings off (target >= 100/s); with embeddings on, also until every
passage has its vector.

Speed. One agent's store is filled with `--scale` passages (100,000; long documents of SciFact
abstracts) with embeddings off; every passage then gets a random unit vector written straight into
the store (a search's cost does not depend on what the vectors say) and the hub restarts with
embeddings on. `documents.search` p50/p99, lexical and hybrid (the SciFact claims), one at a time,
beside `auth.whoami` through the same client. Targets: p99 <= 50 ms lexical, <= 100 ms hybrid.

Upload. A fresh hub receives one file of 25 MiB (the default limit) as `multipart/form-data`; the
growth of its peak resident memory (VmHWM) over the upload is reported: flat means far below the
file's size.
"""

import argparse
import asyncio
import io
import os
import tempfile
import time
from pathlib import Path
from statistics import mean
from typing import Any, Final

import httpx

from bench.datasets import Beir, MissingData, PlainBm25, ndcg_at_10, recall_at, scifact
from bench.hubs import Rpc, database_url, fill_vectors, hub, run_on_stores, timed
from bench.report import Figure, percentile
from hub.retrieval.embeddings import installed
from tests.servers import HubServer, postgres_available

SCENARIO: Final = "documents"
BATCH: Final = 100
PAGE: Final = 50
NDCG_TARGET: Final = {"lexical": 0.66, "hybrid": 0.70}
INGEST_TARGET_PER_SECOND: Final = 100.0
SEARCH_TARGET_MS: Final = {"lexical": 50.0, "hybrid": 100.0}
UPLOAD_BYTES: Final = 25 * 2**20
ABSTRACTS_PER_LONG_DOCUMENT: Final = 60


async def add_all(rpc: Rpc, documents: list[dict[str, str]], concurrency: int = 2) -> None:
    """In JSON-RPC batches of up to `BATCH` documents that fit a request body (1 MiB)."""
    batches: list[list[dict[str, str]]] = [[]]
    for document in documents:
        if len(batches[-1]) == BATCH or sum(len(d["text"]) for d in batches[-1]) + len(document["text"]) > 600_000:
            batches.append([])
        batches[-1].append(document)
    gate = asyncio.Semaphore(concurrency)

    async def one(batch: list[dict[str, str]]) -> None:
        async with gate:
            await rpc.batch([("documents.add", document) for document in batch])

    await asyncio.gather(*(one(batch) for batch in batches))


def round_completed(status: dict[str, Any]) -> bool:
    if status["state"] == "failed":
        raise RuntimeError(f"ingestion failed: {status}")
    return bool(status["state"] == "completed")


async def ingest(rpc: Rpc, documents: list[dict[str, str]]) -> float:
    """Seconds from the first add until the store's round is completed."""
    started = time.perf_counter()
    await add_all(rpc, documents)
    await rpc.until("documents.status", round_completed)
    return time.perf_counter() - started


async def ranked_ids(rpc: Rpc, query: str, mode: str, title_to_id: dict[str, str]) -> list[str]:
    ranked: list[str] = []
    for offset in (0, PAGE):
        found = await rpc.call("documents.search", {"query": query, "mode": mode, "limit": PAGE, "offset": offset,
                                                    "group_by_document": True})
        ranked += [title_to_id[hit["title"]] for hit in found["items"]]
    return ranked


async def quality(store: str, data: Beir, base: Path, embeddings: bool) -> list[Figure]:
    """One hub: SciFact in, every claim asked in each mode; the figures, the ingestion rates among them."""
    modes = ("lexical", "semantic", "hybrid") if embeddings else ("lexical",)
    data_dir = base / f"quality-{store}-{'embedded' if embeddings else 'lexical'}"
    data_dir.mkdir()
    documents = [{"title": doc_id, "text": text} for doc_id, text in data.documents.items()]
    title_to_id = {doc_id: doc_id for doc_id in data.documents}
    figures = []
    with hub(store, data_dir, embeddings="on" if embeddings else "off") as server:
        rpc = Rpc(server)
        try:
            await rpc.register("scifact")
            searchable = await ingest(rpc, documents)
            label = "with embeddings" if embeddings else "lexical"
            print(f"{store} ingest, {label}: {len(documents) / searchable:.1f} documents/s until searchable",
                  flush=True)
            figures.append(Figure(SCENARIO, f"ingest rate, {label}, until searchable ({store})",
                                  len(documents) / searchable, "docs/s", "asyncio",
                                  target="" if embeddings else f">= {INGEST_TARGET_PER_SECOND:g}/s",
                                  met=None if embeddings else len(documents) / searchable >= INGEST_TARGET_PER_SECOND,
                                  details={"documents": len(documents)}))
            if embeddings:
                waited = time.perf_counter()
                # 7,216 passages at about 14/s on a quiet machine; at the lower priority, far slower on a busy one.
                summary = await rpc.until("documents.store", lambda store: store["embedded"] >= store["passages"],
                                          limit=3600)
                embedded = searchable + time.perf_counter() - waited
                figures.append(Figure(SCENARIO, f"ingest rate, with embeddings, until embedded ({store})",
                                      len(documents) / embedded, "docs/s", "asyncio",
                                      details={"passages": summary["passages"]}))
            floor = PlainBm25(data.documents)
            scores: dict[str, tuple[list[float], list[float]]] = {mode: ([], []) for mode in (*modes, "floor")}
            for query_id, query in data.queries.items():
                relevant = data.relevant[query_id]
                for mode in modes:
                    ranked = await ranked_ids(rpc, query, mode, title_to_id)
                    scores[mode][0].append(ndcg_at_10(ranked, relevant))
                    scores[mode][1].append(recall_at(ranked, relevant, 100))
                ranked = floor.search(query, 100)
                scores["floor"][0].append(ndcg_at_10(ranked, relevant))
                scores["floor"][1].append(recall_at(ranked, relevant, 100))
        finally:
            await rpc.close()
    floor_ndcg, floor_recall = mean(scores["floor"][0]), mean(scores["floor"][1])
    for mode in modes:
        ndcg, recall = mean(scores[mode][0]), mean(scores[mode][1])
        target = NDCG_TARGET.get(mode)
        met = None if target is None else ndcg >= target and (mode != "lexical" or ndcg >= floor_ndcg)
        details = {"queries": len(data.queries), "documents": len(documents)}
        figures.append(Figure(SCENARIO, f"scifact nDCG@10, {mode} ({store})", ndcg, "", "asyncio",
                              floor=floor_ndcg, floor_name="plain BM25 (FTS5)",
                              target=f">= {target}" + (" and >= floor" if mode == "lexical" else "") if target else "",
                              met=met, details=details))
        figures.append(Figure(SCENARIO, f"scifact recall@100, {mode} ({store})", recall, "", "asyncio",
                              floor=floor_recall, floor_name="plain BM25 (FTS5)", details=details))
        print(f"{store} {mode}: nDCG@10 {ndcg:.4f} (floor {floor_ndcg:.4f}), recall@100 {recall:.4f}", flush=True)
    return figures


def long_documents(data: Beir, scale: int) -> list[dict[str, str]]:
    """Documents of many abstracts each, about `scale` passages in all (an abstract makes 1.27 passages)."""
    abstracts = list(data.documents.values())
    documents = []
    for number in range(max(1, round(scale / (ABSTRACTS_PER_LONG_DOCUMENT * 1.27)))):
        start = number * ABSTRACTS_PER_LONG_DOCUMENT
        parts = [f"{abstracts[(start + i) % len(abstracts)]} ({number}.{i})"
                 for i in range(ABSTRACTS_PER_LONG_DOCUMENT)]
        documents.append({"title": f"Collection {number}", "text": "\n\n".join(parts)})
    return documents


async def speed(store: str, data: Beir, scale: int, base: Path, quick: bool) -> list[Figure]:
    data_dir = base / f"speed-{store}"
    data_dir.mkdir()
    with hub(store, data_dir, embeddings="off") as server:
        rpc = Rpc(server)
        try:
            await rpc.register("scale")
            documents = long_documents(data, scale)
            loaded = await ingest(rpc, documents)
            passages = (await rpc.call("documents.store"))["passages"]
            server.stop()
            fill_vectors(database_url(server))
            server.env["PARLEY_EMBEDDINGS"] = "on"
            server.launch()
            rounds = 100 if quick else 500
            floor = await timed(rpc, [("auth.whoami", {})] * rounds)
            await rpc.call("documents.search", {"query": "warm up", "mode": "hybrid"})  # the model and the vectors
            queries = list(data.queries.values())[: 100 if quick else None]
            samples = {mode: await timed(rpc, [("documents.search", {"query": query, "mode": mode})
                                               for query in queries])
                       for mode in ("lexical", "hybrid")}
        finally:
            await rpc.close()
    details = {"passages": passages, "documents": len(documents), "load_seconds": round(loaded, 1),
               "passages_per_second": round(passages / loaded)}
    figures = []
    for mode, values in samples.items():
        for fraction, label in ((0.5, "p50"), (0.99, "p99")):
            target = SEARCH_TARGET_MS[mode] if label == "p99" else None
            value = percentile(values, fraction)
            figures.append(Figure(SCENARIO, f"documents.search {mode} {label} at {passages:,} passages ({store})",
                                  value, "ms", "asyncio", floor=percentile(floor, fraction), floor_name="auth.whoami",
                                  target=f"<= {target:g} ms" if target else "",
                                  met=value <= target if target else None, details=details))
    return figures


def reset_peak_rss(pid: int) -> None:
    """Start the process's peak resident memory (VmHWM) again from what it holds now (Linux)."""
    with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for process {pid}")


async def upload(server: HubServer, token: str, name: str, content: bytes) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        response = await http.post("/api/files", headers={"authorization": f"Bearer {token}"},
                                   files={"file": (name, io.BytesIO(content), "application/octet-stream")})
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


async def upload_memory(store: str, base: Path) -> list[Figure]:
    data_dir = base / f"upload-{store}"
    data_dir.mkdir()
    content = os.urandom(UPLOAD_BYTES)
    with hub(store, data_dir, embeddings="off") as server:
        rpc = Rpc(server)
        try:
            await rpc.register("upload")
            assert rpc.token and server.process
            await upload(server, rpc.token, "warm-up.bin", os.urandom(1 << 20))  # first-use imports and buffers
            reset_peak_rss(server.process.pid)
            before = peak_rss_kib(server.process.pid)
            started = time.perf_counter()
            stored = await upload(server, rpc.token, "big.bin", content)
            seconds = time.perf_counter() - started
            after = peak_rss_kib(server.process.pid)
        finally:
            await rpc.close()
    assert stored["size"] == UPLOAD_BYTES
    growth = (after - before) / 1024
    return [Figure(SCENARIO, f"upload of 25 MiB: peak resident memory growth ({store})", growth, "MiB", "asyncio",
                   floor=UPLOAD_BYTES / 2**20, floor_name="the file's size", target="flat (well under the file)",
                   met=growth < UPLOAD_BYTES / 2**20 / 4,
                   details={"peak_before_mib": round(before / 1024), "peak_after_mib": round(after / 1024),
                            "seconds": round(seconds, 2)})]


async def main_async(args: argparse.Namespace) -> list[Figure]:
    try:
        data = scifact()
    except MissingData as missing:
        raise SystemExit(f"bench.documents: {missing}") from None
    stores = [store for store in args.stores.split(",") if store != "postgres" or postgres_available() is None]
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="parley-bench-documents-") as tmp:
        base = Path(tmp)
        for store in stores:
            figures += await quality(store, data, base, embeddings=False)
            if installed() and not args.quick:
                figures += await quality(store, data, base, embeddings=True)
            figures += await upload_memory(store, base)
            print(f"{store} upload: {figures[-1].value:.1f} MiB peak growth", flush=True)
        for store in stores:
            figures += await speed(store, data, args.scale or (10_000 if args.quick else 100_000), base, args.quick)
    return figures


def main() -> None:
    run_on_stores(__doc__, main_async, "--scale", "passages in the store for the speed part (default 100,000)")

if __name__ == "__main__":
    main()
