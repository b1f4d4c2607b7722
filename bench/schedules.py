"""Schedules (issue 14): how late the scheduler starts runs when many schedules are due in one minute.

    .venv/bin/python -m bench.schedules [--quick] [--schedules N] [--stores sqlite,postgres]

A real hub (`parley serve`, asyncio backend) gets `--schedules` schedules (1,000) of a one-step
workflow, all `* * * * *`, made in the first half of a minute so that all come due at the next
minute's start. Two lags per run, on the hub's clock, from that fire time: to its `created_at`, the
moment its fire transaction began (the scheduler's wake-up and the fire transactions before its
own, 100 schedules each): the scheduler's lag; and to its `started_at`, when the engine took it up
(behind every run queued before it, `workflow_concurrency` at a time per node): what a user sees.
Reported: p50 and p99 of each. On
one node (each store) and on two (one PostgreSQL database, one Redis), where each fire time must
still start exactly one run; the figure "runs started" must equal the schedules.
"""

import argparse
import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from bench.hubs import STORES_HELP, Rpc, hub, run_on_stores
from bench.report import Figure, percentile
from tests.servers import HubServer, drop_postgres_database, postgres_available, start_nodes

SCENARIO: Final = "schedules"
BATCH: Final = 50
ECHO: Final = {"name": "echo", "nodes": [{"id": "a", "type": "transform", "value": "{{ input }}"}]}


async def scheduled_runs(rpc: Rpc) -> list[str]:
    """The runs schedules started."""
    found, cursor = [], None
    while True:
        page = await rpc.call("executions.list", {"trigger": "schedule", "limit": 200,
                                                  **({"cursor": cursor} if cursor else {})})
        found += [item["execution_id"] for item in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            return found


async def created_and_started(rpc: Rpc, execution_ids: list[str]) -> list[tuple[datetime, datetime]]:
    """When each run was created and started, once all have started."""
    while True:
        runs = [run for first in range(0, len(execution_ids), BATCH) for run in await rpc.batch([
            ("executions.get", {"execution_id": execution_id}) for execution_id in execution_ids[first:first + BATCH]])]
        if all(run["started_at"] for run in runs):
            return [(datetime.fromisoformat(run["created_at"]), datetime.fromisoformat(run["started_at"]))
                    for run in runs]
        await asyncio.sleep(0.5)


async def lag(nodes: list[HubServer], count: int) -> tuple[list[float], list[float], int]:
    """Lags (ms) to creation and to start of the runs of `count` schedules due at once, and how many runs."""
    owner = Rpc(nodes[0])
    others = [Rpc(node) for node in nodes[1:]]
    try:
        await owner.register("scheduler")
        for other in others:
            other.token = owner.token
        workflow_id = (await owner.call("workflows.create", ECHO))["workflow_id"]
        while datetime.now(UTC).second >= 30:  # all made before the minute ends, so all due at its end
            await asyncio.sleep(0.5)
        clients = [owner, *others]
        for first in range(0, count, BATCH):
            await clients[first // BATCH % len(clients)].batch([
                ("schedules.create", {"workflow_id": workflow_id, "cron": "* * * * *", "input": {"n": n}})
                for n in range(first, min(first + BATCH, count))])
        now = datetime.now(UTC)
        fire_time = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        deadline = time.monotonic() + 180
        while len(await scheduled_runs(owner)) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)  # a second run of one fire time would show by now
        times = await created_and_started(owner, await scheduled_runs(owner))
    finally:
        for client in (owner, *others):
            await client.close()
    return ([(created - fire_time).total_seconds() * 1000 for created, _ in times],
            [(started - fire_time).total_seconds() * 1000 for _, started in times], len(times))


def figures(where: str, count: int, created: list[float], started: list[float], runs: int) -> list[Figure]:
    details = {"schedules": count}
    return [
        *(Figure(SCENARIO, f"{what} {name} ({where})", percentile(lags, fraction), "ms", "asyncio", details=details)
          for what, lags in (("lag to the run's creation", created), ("lag to the run's start", started))
          for name, fraction in (("p50", 0.5), ("p99", 0.99))),
        Figure(SCENARIO, f"runs started ({where})", runs, "runs", "asyncio", target=f"= {count}",
               met=runs == count, details=details),
    ]


async def main_async(args: argparse.Namespace) -> list[Figure]:
    count = args.schedules or (100 if args.quick else 1000)
    stores = [store for store in args.stores.split(",") if store != "postgres" or postgres_available() is None]
    results: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="parley-bench-schedules-") as tmp:
        base = Path(tmp)
        for store in stores:
            (base / store).mkdir()
            with hub(store, base / store, embeddings="off", max_schedules=str(count),
                     max_active_executions=str(2 * count)) as server:
                results += figures(f"one node, {store}", count, *await lag([server], count))
            print(f"one node, {store}: creation p99 {results[-4].value:.0f} ms", flush=True)
        if "postgres" in stores and os.environ.get("PARLEY_TEST_REDIS_URL"):
            nodes = start_nodes("asyncio", base / "cluster", 2, redis_url=os.environ["PARLEY_TEST_REDIS_URL"],
                                redis_channel=f"parley-bench-{os.getpid()}", embeddings="off",
                                max_schedules=str(count), max_active_executions=str(2 * count))
            try:
                results += figures("two nodes, postgres", count, *await lag(nodes, count))
            finally:
                for node in nodes:
                    node.stop()
                drop_postgres_database(nodes[0].database_url)
            print(f"two nodes: creation p99 {results[-4].value:.0f} ms, {results[-1].value:.0f} runs", flush=True)
    return results


def main() -> None:
    run_on_stores(__doc__, main_async, "--schedules", "schedules due in the same minute (default 1000)",
                  STORES_HELP + "; two nodes also PARLEY_TEST_REDIS_URL")

if __name__ == "__main__":
    main()
