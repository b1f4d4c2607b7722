"""The send scenario against `parley serve --workers N` on PostgreSQL + Redis (issue 16): acked
messages/s for each N, with the first N (one worker: a plain `parley serve` on the same store) as the
floor, and a count of the database afterwards: nothing lost, nothing duplicated.

    .venv/bin/python -m bench.send_workers [--workers 1,2] [--backend asyncio|trio|both] [--agents 16]
                                           [--messages 2000] [--window 16] [--db-delay-ms 0] [--quick]
                                           [--json PATH]

The load is `bench.send`'s: agents paired into direct conversations, one WebSocket each, pipelining
`messages.send` with `--window` requests in flight (an answer means the message is committed). Each
run starts a fresh PostgreSQL database (`PARLEY_TEST_POSTGRES_URL`, default the local `test` one)
and uses Redis (`PARLEY_TEST_REDIS_URL`, default redis://127.0.0.1:6379/0); the hub is asked for
its `/health` until every worker has answered, then the agents connect, so the kernel spreads their
connections over the workers as it would a client's.

After the run every benchmark message is counted in the database: each agent's bodies are distinct,
so `lost` (acknowledged, missing) and `duplicated` (stored twice) are exact. The details also give
how many connections each worker took, the CPU of the hub's processes, of the client and of the
whole machine (`machine_cores`, of 2: PostgreSQL, Redis and the client share the machine with the
workers), and the load averages when the run began.

With `--db-delay-ms`, the hub reaches PostgreSQL through a proxy in this process that holds every
chunk that long each way (`tests.tcp_proxy.TcpProxy`): a database a network hop away, where each
statement's round trip, not the machine, decides how fast one writer goes.
"""

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
import httpx
import sqlalchemy as sa

from bench.clients import Pipeline, ProcessMeter, WsClient, open_ws, register_agents, run
from bench.report import Figure, add_common_options, backends, emit, percentile
from bench.send import Run, Sizes, add_size_options, paired, send_frames, sizes_of
from storage.store import create_store_engine
from tests.servers import HubServer, drop_postgres_database, make_server
from tests.tcp_proxy import TcpProxy

SCENARIO: Final = "send, --workers"
TARGET: Final = 1.6
"""Two workers: at least this many times one worker's acked messages/s (issue 16)."""
START_SECONDS: Final = 60.0


@dataclass(frozen=True)
class WorkersRun:
    run: Run
    connections: list[int]
    """How many of the agents' connections each worker took."""
    lost: int
    duplicated: int
    load: str
    """The machine's load averages (1, 5, 15 minutes) when the run began."""


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
    return found


def _sockets(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


def _until_every_worker_answers(server: HubServer, workers: int) -> None:
    """`launch` returns once one worker answers; the others may still be starting."""
    nodes: set[str] = set()
    deadline = time.monotonic() + START_SECONDS
    while len(nodes) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(nodes)} of {workers} workers answered in {START_SECONDS:g} s:\n{server.log()}")
        health = httpx.get(server.url + "/health", headers={"connection": "close"}, timeout=5).json()
        nodes.add(health["cluster"]["node"])


def _counted(database_url: str, expected: int) -> tuple[int, int]:
    """(lost, duplicated) among the `expected` benchmark messages (distinct bodies for each sender)."""
    messages = sa.table("messages", sa.column("sender_id"), sa.column("body"))
    engine = create_store_engine(database_url)
    try:
        with engine.connect() as conn:
            rows, distinct = conn.execute(
                sa.select(sa.func.count(), sa.func.count(sa.distinct(sa.tuple_(messages.c.sender_id, messages.c.body))))
                .where(messages.c.body.like("bench message %"))).one()
    finally:
        engine.dispose()
    return expected - distinct, rows - distinct


async def _send(conns: list[WsClient], conversation_ids: list[str], sizes: Sizes, pids: list[int]) -> Run:
    """As `bench.send.pipelined`, with the CPU of every process of the hub."""
    pairs = list(zip(conns, conversation_ids, strict=True))
    await asyncio.gather(*(Pipeline(conn, sizes.window).run(send_frames(cid, sizes.messages // 10, 10_000_000))
                           for conn, cid in pairs))  # warm-up, not measured
    meter = ProcessMeter(pids)
    results = await asyncio.gather(*(Pipeline(conn, sizes.window).run(send_frames(cid, sizes.messages))
                                     for conn, cid in pairs))
    cpu = meter.read()
    latencies = [latency for per_conn in results for latency in per_conn]
    return Run(rate=len(latencies) / meter.elapsed, p50_ms=percentile(latencies, 0.5) * 1000,
               p99_ms=percentile(latencies, 0.99) * 1000, cpu=cpu)


async def workers_run(backend: str, sizes: Sizes, workers: int, db_delay_ms: float) -> WorkersRun:
    with tempfile.TemporaryDirectory(prefix="parley-bench-workers-") as tmp, contextlib.ExitStack() as stack:
        server = make_server(backend, "postgres", Path(tmp), redis_url=os.environ["PARLEY_TEST_REDIS_URL"],
                             redis_channel=f"parley-bench-{os.getpid()}-{workers}")
        server.serve_args = ("--workers", str(workers))
        if db_delay_ms:
            url = sa.make_url(server.database_url)
            proxy = stack.enter_context(TcpProxy(url.host or "127.0.0.1", url.port or 5432,
                                                 delay_seconds=db_delay_ms / 1000))
            server.env["PARLEY_DATABASE_URL"] = url.set(host="127.0.0.1", port=proxy.port).render_as_string(
                hide_password=False)
        conns: list[WsClient] = []
        try:
            server.launch()
            assert server.process is not None
            await anyio.to_thread.run_sync(_until_every_worker_answers, server, workers)
            pids = [server.process.pid, *_children(server.process.pid)]
            agents = await register_agents(server, sizes.agents, "sender")
            conversation_ids = await paired(server, agents)
            await asyncio.sleep(0.5)  # the hub closes the set-up's HTTP connections
            before = [_sockets(pid) for pid in pids]
            conns = [await open_ws(server.ws_url, agent.access_token) for agent in agents]
            connections = [_sockets(pid) - count for pid, count in zip(pids, before, strict=True)]
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            measured = await _send(conns, conversation_ids, sizes, pids)
            lost, duplicated = _counted(server.database_url, sizes.agents * (sizes.messages + sizes.messages // 10))
        finally:
            for conn in conns:
                conn.close()
            if server.process is not None and server.stop() != 0:
                print(f"warning: the hub exited with {server.process.returncode}:\n{server.log()}")
            drop_postgres_database(server.database_url)
    return WorkersRun(measured, connections[1:] if workers > 1 else connections, lost, duplicated, load)


def _workers(count: int) -> str:
    return f"{count} worker{'s' if count > 1 else ''}"


def figures(backend: str, sizes: Sizes, runs: dict[int, WorkersRun], db_delay_ms: float) -> list[Figure]:
    first = next(iter(runs))
    found = []
    for workers, measured in runs.items():
        correct = measured.lost == measured.duplicated == 0
        targeted = (first, workers) == (1, 2)
        found.append(Figure(
            SCENARIO, f"acked messages/s, {_workers(workers)}", measured.run.rate, "msg/s", backend,
            runs[first].run.rate, _workers(first),
            f">= {TARGET}x 1 worker, none lost or duplicated" if targeted else "none lost or duplicated",
            (measured.run.rate >= TARGET * runs[first].run.rate and correct) if targeted else correct,
            {"agents": sizes.agents, "messages": sizes.total, "window": sizes.window,
             "connections_per_worker": measured.connections, "lost": measured.lost,
             "duplicated": measured.duplicated, "ack_p50_ms": round(measured.run.p50_ms, 1),
             "ack_p99_ms": round(measured.run.p99_ms, 1), "cpu": measured.run.cpu,
             "load_at_start": measured.load, "db_delay_ms": db_delay_ms}))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_options(parser)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts; the first is the floor")
    parser.add_argument("--db-delay-ms", type=float, default=0.0,
                        help="hold each chunk to and from PostgreSQL this long (a database a network hop away)")
    add_size_options(parser)
    args = parser.parse_args()
    sizes = sizes_of(parser, args)
    try:
        counts = [int(count) for count in args.workers.split(",")]
    except ValueError:
        parser.error(f"--workers: expected comma-separated numbers, not {args.workers!r}")
    os.environ.setdefault("PARLEY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    os.environ.setdefault("PARLEY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    os.environ.setdefault("PARLEY_LOG_LEVEL", "WARNING")
    if args.db_delay_ms < 0:
        parser.error("--db-delay-ms: expected 0 or more")
    emit([figure for backend in backends(args.backend)
          for figure in figures(backend, sizes, {workers: run(workers_run(backend, sizes, workers, args.db_delay_ms))
                                                  for workers in counts}, args.db_delay_ms)],
         json_path=args.json_path)


if __name__ == "__main__":
    main()
