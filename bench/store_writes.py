"""Group commit versus the floor: committed writes/s through `Store.write` (many concurrent writers,
one writer task) against a bare loop of one transaction per insert on the same SQLite settings.

    .venv/bin/python -m bench.store_writes [--writes 5000] [--concurrency 200] [--backend asyncio|trio]

Prints one JSON record and a table; the figure that matters is the ratio, measured in the same run.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import anyio
from sqlalchemy import Column, Integer, MetaData, String, Table, insert

from storage.store import Store, create_store_engine

metadata = MetaData()
rows = Table("bench_rows", metadata, Column("id", Integer, primary_key=True), Column("body", String(64)))


def one_transaction_per_insert(url: str, writes: int) -> float:
    engine = create_store_engine(url)
    metadata.create_all(engine)
    started = time.perf_counter()
    for i in range(writes):
        with engine.begin() as conn:
            conn.execute(insert(rows).values(body=f"row {i}"))
    elapsed = time.perf_counter() - started
    engine.dispose()
    return writes / elapsed


async def group_commit(url: str, writes: int, concurrency: int) -> tuple[float, float]:
    store = Store(create_store_engine(url))
    metadata.create_all(store.engine)
    per_task = writes // concurrency

    async def writer(task: int) -> None:
        for i in range(per_task):
            await store.write(lambda conn, n=i: conn.execute(insert(rows).values(body=f"row {task}/{n}")))

    async with anyio.create_task_group() as hub:
        await hub.start(store.run)
        started = time.perf_counter()
        async with anyio.create_task_group() as writers:
            for task in range(concurrency):
                writers.start_soon(writer, task)
        elapsed = time.perf_counter() - started
        store.close()
    store.dispose()
    return per_task * concurrency / elapsed, store.writes / max(store.commits, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        floor = one_transaction_per_insert(f"sqlite:///{Path(tmp) / 'floor.db'}", args.writes)
        rate, batch = anyio.run(group_commit, f"sqlite:///{Path(tmp) / 'store.db'}", args.writes, args.concurrency,
                                backend=args.backend)
    record = {"benchmark": "store_writes", "backend": args.backend, "writes": args.writes,
              "concurrency": args.concurrency, "floor_writes_per_s": round(floor), "store_writes_per_s": round(rate),
              "ratio_to_floor": round(rate / floor, 2), "writes_per_commit": round(batch, 1)}
    print(json.dumps(record))
    print(f"{'one tx per insert (floor)':<28}{floor:>10.0f} writes/s")
    print(f"{'Store.write group commit':<28}{rate:>10.0f} writes/s   x{rate / floor:.1f}   {batch:.1f} writes/commit")


if __name__ == "__main__":
    main()
