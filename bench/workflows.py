"""Workflows (issue 13): how many runs a hub finishes per second, what a step costs, and a crash.

    .venv/bin/python -m bench.workflows [--quick] [--stores sqlite,postgres] [--runs N]

Throughput. A real hub (`parley serve`, asyncio backend) runs a 3-step workflow (`transform` ->
`call` `agents.get` -> `send` to a second agent), `--runs` times (500), started in JSON-RPC batches
of 50 over HTTP; the figure is runs finished per second from the first start to the last end. The
floor is the same number of bare `messages.send` calls to the same agent, through the same client,
in the same batches: what the `send` step costs when nothing orchestrates it. Latency: one run at
a time, from `workflows.run` to its end seen through `executions.get` with `wait_seconds`
(long-polling), p50 and p99, beside one bare `messages.send`.

Crash. 200 runs of `send` -> `delay 0.5 s` -> `send` are started, the hub is SIGKILLed while they
are in flight, and started again on the same store: every run must end `completed` once, with each
of its two messages sent exactly once. Reported: runs completed, messages missing or duplicated
(both must be 0), and the seconds from the restart until the last run ended.
"""

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

from bench.hubs import Rpc, hub, run_on_stores, timed
from bench.report import Figure, percentile
from tests.servers import HubServer, postgres_available

SCENARIO: Final = "workflows"
BATCH: Final = 50
CRASH_RUNS: Final = 200
FINISHED: Final = ("completed", "failed", "cancelled", "timed_out")


def three_steps(peer: str) -> dict[str, Any]:
    return {"name": "three steps", "scopes": ["agents:read"], "nodes": [
        {"id": "shape", "type": "transform", "value": {"greeting": "hello {{ input.n }}"}},
        {"id": "look", "type": "call", "operation": "agents.get", "params": {"agent": peer}},
        {"id": "tell", "type": "send", "to": peer, "text": "{{ steps.shape.greeting }} to {{ steps.look.handle }}"},
    ], "edges": [{"from": "shape", "to": "look"}, {"from": "look", "to": "tell"}]}


async def in_batches(rpc: Rpc, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    results: list[Any] = []
    for start in range(0, len(calls), BATCH):
        results += await rpc.batch(calls[start:start + BATCH])
    return results


async def until_finished(rpc: Rpc, execution_ids: list[str], limit: float = 600.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + limit
    pending = list(execution_ids)
    ended: dict[str, dict[str, Any]] = {}
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} runs did not end in {limit:.0f} s")
        found = await in_batches(rpc, [("executions.get", {"execution_id": i}) for i in pending])
        for execution in found:
            if execution["status"] in FINISHED:
                ended[execution["execution_id"]] = execution
        pending = [i for i in pending if i not in ended]
        if pending:
            await asyncio.sleep(0.1)
    return [ended[i] for i in execution_ids]


async def throughput(server: HubServer, runs: int, quick: bool) -> list[Figure]:
    owner, peer = Rpc(server), Rpc(server)
    try:
        await owner.register("owner")
        peer_id = await peer.register("peer")
        workflow = await owner.call("workflows.create", three_steps(peer_id))
        sends = [("messages.send", {"to": peer_id, "body": f"hello {i}"}) for i in range(runs)]
        started = time.perf_counter()
        await in_batches(owner, sends)
        floor_seconds = time.perf_counter() - started
        started = time.perf_counter()
        execution_ids = [result["execution_id"] for result in await in_batches(owner, [
            ("workflows.run", {"workflow_id": workflow["workflow_id"], "input": {"n": i}}) for i in range(runs)])]
        ended = await until_finished(owner, execution_ids)
        run_seconds = time.perf_counter() - started
        failed = [e for e in ended if e["status"] != "completed"]
        if failed:
            raise RuntimeError(f"{len(failed)} runs did not complete: {failed[0]['error']}")
        rounds = 50 if quick else 200
        bare = await timed(owner, [("messages.send", {"to": peer_id, "body": f"one {i}"}) for i in range(rounds)])
        latencies = []
        for i in range(rounds):
            begun = time.perf_counter()
            one = await owner.call("workflows.run", {"workflow_id": workflow["workflow_id"], "input": {"n": i}})
            end = await owner.call("executions.get", {"execution_id": one["execution_id"], "wait_seconds": 30})
            if end["status"] != "completed":
                raise RuntimeError(f"run {one['execution_id']} ended {end['status']}")
            latencies.append((time.perf_counter() - begun) * 1000)
    finally:
        await owner.close()
        await peer.close()
    details = {"runs": runs, "steps_per_run": 3, "batch": BATCH}
    figures = [Figure(SCENARIO, f"3-step runs finished per second ({server.store})", runs / run_seconds, "runs/s",
                      "asyncio", floor=runs / floor_seconds, floor_name="bare messages.send/s", details=details)]
    for fraction, label in ((0.5, "p50"), (0.99, "p99")):
        figures.append(Figure(SCENARIO, f"one 3-step run, start to end seen, {label} ({server.store})",
                              percentile(latencies, fraction), "ms", "asyncio", floor=percentile(bare, fraction),
                              floor_name="bare messages.send", details={"rounds": rounds}))
    return figures


async def crash(store: str, base: Path) -> list[Figure]:
    data_dir = base / f"crash-{store}"
    data_dir.mkdir()
    with hub(store, data_dir, embeddings="off") as server:
        owner, peer = Rpc(server), Rpc(server)
        try:
            await owner.register("owner")
            peer_id = await peer.register("peer")
            workflow = await owner.call("workflows.create", {"name": "two sends", "nodes": [
                {"id": "first", "type": "send", "to": peer_id, "text": "first {{ execution.id }}"},
                {"id": "pause", "type": "delay", "seconds": 0.5},
                {"id": "second", "type": "send", "to": peer_id, "text": "second {{ execution.id }}"}],
                "edges": [{"from": "first", "to": "pause"}, {"from": "pause", "to": "second"}]})
            execution_ids = [result["execution_id"] for result in await in_batches(owner, [
                ("workflows.run", {"workflow_id": workflow["workflow_id"]}) for _ in range(CRASH_RUNS)])]
            await asyncio.sleep(0.3)
            in_flight = sum(1 for e in await in_batches(owner, [("executions.get", {"execution_id": i})
                                                                for i in execution_ids])
                            if e["status"] not in FINISHED)
            server.kill()
            server.launch()
            restarted = time.perf_counter()
            ended = await until_finished(owner, execution_ids)
            recovery = time.perf_counter() - restarted
            conversation = await owner.call("conversations.open_direct", {"agent": peer_id})
            bodies: Counter[str] = Counter()
            before = None
            while True:
                page = await owner.call("messages.list", {"conversation_id": conversation["conversation_id"],
                                                          "limit": 200, **({"before": before} if before else {})})
                bodies.update(m["body"] for m in page["items"] if m["body"])
                if not page["items"] or page["items"][0]["seq"] <= 1:
                    break
                before = page["items"][0]["seq"]
        finally:
            await owner.close()
            await peer.close()
    expected = [f"{step} {i}" for i in execution_ids for step in ("first", "second")]
    missing = sum(1 for body in expected if bodies[body] == 0)
    duplicated = sum(bodies[body] - 1 for body in expected if bodies[body] > 1)
    completed = sum(1 for e in ended if e["status"] == "completed")
    details = {"runs": CRASH_RUNS, "in_flight_at_kill": in_flight, "recovery_seconds": round(recovery, 2)}
    return [
        Figure(SCENARIO, f"crash: runs completed after SIGKILL and restart ({store})", completed, "runs", "asyncio",
               target=f"= {CRASH_RUNS}", met=completed == CRASH_RUNS, details=details),
        Figure(SCENARIO, f"crash: messages missing or sent twice ({store})", missing + duplicated, "messages",
               "asyncio", target="= 0", met=missing + duplicated == 0,
               details={"missing": missing, "duplicated": duplicated}),
    ]


async def main_async(args: argparse.Namespace) -> list[Figure]:
    stores = [store for store in args.stores.split(",") if store != "postgres" or postgres_available() is None]
    runs = args.runs or (100 if args.quick else 500)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="parley-bench-workflows-") as tmp:
        base = Path(tmp)
        for store in stores:
            data_dir = base / f"throughput-{store}"
            data_dir.mkdir()
            with hub(store, data_dir, embeddings="off") as server:
                figures += await throughput(server, runs, args.quick)
            print(f"{store}: {figures[-3].value:.0f} runs/s ({figures[-3].ratio:.2f}x bare sends)", flush=True)
            figures += await crash(store, base)
            print(f"{store} crash: {figures[-2].value:.0f} completed, {figures[-1].value:.0f} missing or twice",
                  flush=True)
    return figures


def main() -> None:
    run_on_stores(__doc__, main_async, "--runs", "runs for the throughput figure (default 500)")

if __name__ == "__main__":
    main()
