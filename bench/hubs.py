"""What the retrieval benchmarks share: a real hub process, a JSON-RPC client, and ways to fill it fast.

A scenario starts `parley serve` (asyncio backend) on a fresh data directory or PostgreSQL database,
talks to it over HTTP JSON-RPC as one agent, and drops the database when done.
"""

import argparse
import asyncio
import itertools
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.report import Figure, add_common_options, emit
from hub.retrieval.embeddings import DIMENSION, MODEL_ID
from storage.schema import search_collections, search_entries
from storage.store import create_store_engine
from tests.servers import HubServer, drop_postgres_database, make_server


@contextmanager
def hub(store: str, data_dir: Path, **settings: str) -> Iterator[HubServer]:
    server = make_server("asyncio", store, data_dir, **settings)
    server.launch()
    try:
        yield server
    finally:
        server.stop()
        if server.database_url:
            drop_postgres_database(server.database_url)


class Rpc:
    """JSON-RPC over HTTP, one connection, as one agent."""

    def __init__(self, server: HubServer) -> None:
        self._http = httpx.AsyncClient(base_url=server.url, timeout=120)
        self._ids = itertools.count(1)
        self.token: str | None = None
        self._refresh_token: str | None = None
        self._refreshing = asyncio.Lock()

    async def close(self) -> None:
        await self._http.aclose()

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return (await self.batch([(method, params or {})]))[0]

    async def batch(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        body = [{"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
                for method, params in calls]
        used = self.token
        answers = await self._post(body)
        if _expired(answers):
            await self._refresh(used)  # a load of 100,000 items outlasts an access token
            answers = await self._post(body)
        if isinstance(answers, dict):
            raise RuntimeError(answers)
        by_id = {answer["id"]: answer for answer in answers}
        results = []
        for request in body:
            answer = by_id[request["id"]]
            if "error" in answer:
                raise RuntimeError(answer["error"])
            results.append(answer["result"])
        return results

    async def _post(self, body: list[dict[str, Any]], *, authorized: bool = True) -> Any:
        headers = {"authorization": f"Bearer {self.token}"} if self.token and authorized else {}
        return (await self._http.post("/rpc", json=body, headers=headers)).json()

    async def _refresh(self, expired: str | None) -> None:
        async with self._refreshing:
            if self._refresh_token is None or self.token != expired:
                return  # another task refreshed meanwhile
            answer = await self._post([{"jsonrpc": "2.0", "id": 0, "method": "auth.refresh",
                                        "params": {"refresh_token": self._refresh_token}}], authorized=False)
            tokens = answer[0]["result"]
            self.token, self._refresh_token = tokens["access_token"], tokens["refresh_token"]

    async def until(self, method: str, done: Any, limit: float = 1200.0) -> dict[str, Any]:
        """Call `method` until `done(result)`; the last result. Raises after `limit` seconds."""
        deadline = time.monotonic() + limit
        while not done(result := await self.call(method)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{method} did not get there in {limit:.0f} s: {result}")
            await asyncio.sleep(0.2)
        return result  # type: ignore[no-any-return]

    async def register(self, stem: str) -> str:
        registered = await self.call("auth.register", {"handle": f"{stem}-{random.randrange(16**10):010x}"})
        self.token = registered["tokens"]["access_token"]
        self._refresh_token = registered["tokens"]["refresh_token"]
        return str(registered["agent_id"])


def _expired(answer: Any) -> bool:
    """The whole request was refused for its credential (an expired access token, for this client)."""
    return isinstance(answer, dict) and answer.get("error", {}).get("data", {}).get("code") == "unauthorized"


def database_url(server: HubServer) -> str:
    return server.database_url or f"sqlite:///{server.sqlite_path}"


def fill_vectors(database_url: str) -> int:
    """Give every entry without a vector a random unit one (float16, as the hub stores them); how many."""
    import numpy as np

    engine = create_store_engine(database_url)
    rng = np.random.default_rng(7)
    filled = 0
    try:
        with engine.begin() as conn:
            ids = [row[0] for row in conn.execute(sa.select(search_entries.c.id, search_entries.c.collection_id)
                                                  .where(search_entries.c.vector.is_(None)))]
            for start in range(0, len(ids), 5000):
                chunk = ids[start:start + 5000]
                vectors = rng.standard_normal((len(chunk), DIMENSION)).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                conn.execute(sa.update(search_entries).where(search_entries.c.id == sa.bindparam("entry")).values(
                    vector=sa.bindparam("v"), vector_model=MODEL_ID, vector_seq=sa.bindparam("number")),
                    [{"entry": entry, "v": vector.astype(np.float16).tobytes(), "number": filled + index + 1}
                     for index, (entry, vector) in enumerate(zip(chunk, vectors, strict=True))])
                filled += len(chunk)
            conn.execute(sa.update(search_collections).values(vector_seq=filled))
    finally:
        engine.dispose()
    return filled


async def timed(rpc: Rpc, calls: list[tuple[str, dict[str, Any]]]) -> list[float]:
    samples = []
    for method, params in calls:
        started = time.perf_counter()
        await rpc.call(method, params)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


STORES_HELP = "comma-separated: sqlite, postgres (needs PARLEY_TEST_POSTGRES_URL)"


def run_on_stores(doc: str, main_async: Callable[[argparse.Namespace], Awaitable[list[Figure]]], size_option: str,
                  size_help: str, stores_help: str = STORES_HELP) -> None:
    """The command line of a scenario run on each store: the common options, `--stores`, and its size."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_common_options(parser)
    parser.add_argument("--stores", default="sqlite,postgres", help=stores_help)
    parser.add_argument(size_option, type=int, help=size_help)
    args = parser.parse_args()
    os.environ.setdefault("PARLEY_LOG_LEVEL", "WARNING")
    emit(asyncio.run(main_async(args)), json_path=args.json_path)
