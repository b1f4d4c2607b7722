"""`parley serve --workers 2`: two hub processes on one port, each a node of the several-node design
(PostgreSQL + Redis), supervised by the process that bound the port.

What must hold: both workers take connections; what is sent through one is live on a WebSocket held
by the other; concurrent sends through both lose and repeat nothing; SIGTERM stops every worker
gracefully (WebSockets closed with 1001, exit 0); a worker that dies takes the others down and the
command fails; on SQLite, or without Redis, the command refuses to start and says why.
"""

import json
import os
import re
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from bridges.ws_rpc import CONNECTIONS_METRIC

from .client import HubClient
from .mcp_support import SDK_CLIENT_TRIO_GET_STREAM, call, http_client
from .messaging import WAIT, EventSocket, direct, event_socket, group, send, timeline
from .servers import HubServer, drop_postgres_database, free_port, make_server, parley_command, redis_unavailable
from .test_shutdown import descendants, living

needs_cluster = pytest.mark.skipif(redis_unavailable() is not None, reason=f"needs PostgreSQL and Redis: "
                                   f"{redis_unavailable()}")

LIVE_CATCH_UP_SECONDS = "60"
"""So long that an event a worker gets sooner came over Redis, not from the store's catch-up."""

WorkersFactory = Callable[[], HubServer]


def _workers_hub(backend: str, data_dir: Path) -> HubServer:
    """`parley serve --workers 2` on a fresh PostgreSQL database and Redis, not yet started."""
    server = make_server(backend, "postgres", data_dir, redis_url=os.environ["PARLEY_TEST_REDIS_URL"],
                         redis_channel=f"parley-test-{uuid.uuid4().hex[:12]}", catch_up_seconds=LIVE_CATCH_UP_SECONDS)
    server.serve_args = ("--workers", "2")
    return server


def _finish(server: HubServer) -> None:
    """SIGTERM, unless the test ended it, and the exit must be 0; then drop its database."""
    try:
        if server.process is not None and server.process.poll() is None:
            assert server.stop() == 0, server.log()
    finally:
        drop_postgres_database(server.database_url)


@pytest.fixture(scope="module")
def workers_hub(tmp_path_factory: pytest.TempPathFactory, anyio_backend: str) -> Iterator[HubServer]:
    """One started `--workers 2` hub for the tests that leave it running (they register their own agents)."""
    server = _workers_hub(anyio_backend, tmp_path_factory.mktemp("workers"))
    try:
        server.launch()
        yield server
    finally:
        _finish(server)


@pytest.fixture
def start_workers(tmp_path: Path, anyio_backend: str) -> Iterator[WorkersFactory]:
    """A `--workers 2` hub of the test's own, for a test that ends it."""
    started: list[HubServer] = []

    def start() -> HubServer:
        started.append(_workers_hub(anyio_backend, tmp_path))
        started[-1].launch()
        return started[-1]

    yield start
    for server in started:
        _finish(server)


def workers_of(server: HubServer) -> set[int]:
    assert server.process is not None
    return living(descendants(server.process.pid))


@asynccontextmanager
async def pinned_clients(server: HubServer) -> AsyncIterator[list[tuple[HubClient, str]]]:
    """Two clients, each on one kept-alive connection, served by different workers, with their
    workers' node ids (from `/health`)."""
    async with AsyncExitStack() as stack:
        by_node: dict[str, HubClient] = {}
        with anyio.fail_after(WAIT):
            while len(by_node) < 2:
                client = HubClient(server)
                await client.http.aclose()
                client.http = httpx.AsyncClient(base_url=server.url, timeout=30,
                                                limits=httpx.Limits(max_connections=1))
                await stack.enter_async_context(client)
                by_node.setdefault(await node_of(client), client)
        yield [(client, node) for node, client in by_node.items()]


async def node_of(client: HubClient) -> str:
    return str((await client.http.get("/health")).json()["cluster"]["node"])


async def websockets_on(client: HubClient) -> int:
    text = (await client.http.get("/metrics")).text
    found = re.search(rf"^{CONNECTIONS_METRIC} (\d+)", text, flags=re.MULTILINE)
    return int(found.group(1)) if found else 0


@needs_cluster
async def test_both_workers_take_connections(workers_hub: HubServer) -> None:
    server = workers_hub
    assert len(workers_of(server)) == 2
    nodes: set[str] = set()
    with anyio.fail_after(WAIT):
        while len(nodes) < 2:  # a new connection each time: the kernel hands it to either worker
            async with httpx.AsyncClient(base_url=server.url) as http:
                nodes.add((await http.get("/health")).json()["cluster"]["node"])
    async with pinned_clients(server) as pinned:
        for client, node in pinned:
            assert (await client.http.get("/ready")).json() == {"status": "ready"}
            assert await node_of(client) == node  # still the same connection, the same worker


@needs_cluster
async def test_a_message_sent_through_one_worker_is_live_on_a_websocket_held_by_the_other(
    workers_hub: HubServer,
) -> None:
    server = workers_hub
    async with pinned_clients(server) as [(hub_a, node_a), (hub_b, node_b)]:
        alice, bob = await hub_a.register("alice"), await hub_b.register("bob")
        conversation_id = await direct(hub_b, bob, alice)
        with anyio.fail_after(WAIT):  # the WebSockets of an earlier test on this hub are closed
            while await websockets_on(hub_a) + await websockets_on(hub_b):
                await anyio.sleep(0.05)
        async with event_socket(server, alice, after=None) as stream:
            on_a, on_b = await websockets_on(hub_a), await websockets_on(hub_b)
            assert (on_a, on_b) in ((1, 0), (0, 1))
            sender = hub_b if on_a else hub_a  # through the worker that does not hold the WebSocket
            bodies = [f"live {i}" for i in range(20)]
            for body in bodies:
                await send(sender, bob, conversation_id, body)
            assert [event["message"]["body"] for event in await stream.take(len(bodies))] == bodies
        assert (await node_of(hub_a), await node_of(hub_b)) == (node_a, node_b)


@needs_cluster
async def test_concurrent_sends_through_both_workers_lose_and_repeat_nothing(workers_hub: HubServer) -> None:
    server = workers_hub
    async with pinned_clients(server) as [(hub_a, _), (hub_b, _)], AsyncExitStack() as stack:
        hubs = [hub_a, hub_b]
        agents = [await hubs[i % 2].register(f"peer{i}") for i in range(4)]
        conversation_id = await group(hub_a, agents[0], *agents[1:])
        streams: list[EventSocket] = [await stack.enter_async_context(event_socket(server, agent, after=None))
                                      for agent in agents]
        per_sender, senders = 25, 8

        async def sender(index: int) -> None:
            agent = agents[index % len(agents)]
            for n in range(per_sender):
                await send(hubs[index % 2], agent, conversation_id, f"{index}/{n}")

        async with anyio.create_task_group() as tg:
            for index in range(senders):
                tg.start_soon(sender, index)
        expected = Counter(f"{index}/{n}" for index in range(senders) for n in range(per_sender))
        total = sum(expected.values())
        for hub in hubs:
            messages = (await timeline(hub, agents[0], conversation_id))[1:]  # after the group's opening
            assert Counter(message["body"] for message in messages) == expected
            assert [message["seq"] for message in messages] == list(range(2, total + 2))
        for stream in streams:
            received = await stream.take(total)
            assert Counter(event["message"]["body"] for event in received) == expected


MCP_HEADERS = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}


def mcp_messages(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a streamable-HTTP answer: its JSON body, or its SSE stream's `data`."""
    assert response.status_code == 200, (response.status_code, response.text)
    if response.headers["content-type"].startswith("application/json"):
        return [response.json()]
    return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]


async def mcp_call(http: httpx.AsyncClient, headers: dict[str, str], request_id: int, method: str,
                   **params: Any) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    [answer] = [message for message in mcp_messages(await http.post("/mcp", json=body, headers=headers))
                if message.get("id") == request_id]
    assert "result" in answer, answer
    return answer["result"]  # type: ignore[no-any-return]


# The GET stream is read with httpx on the pinned connection (tests.sse_client opens one of its own, which
# the kernel may give to either worker); left early, its inner generators go to the collector, and trio warns.
@pytest.mark.filterwarnings(
    r"ignore:Exception ignored in. <async_generator object :pytest.PytestUnraisableExceptionWarning")
@needs_cluster
async def test_an_mcp_session_is_served_by_its_worker_whichever_worker_a_request_reaches(
    workers_hub: HubServer,
) -> None:
    """A 2025-11-25 session lives in the worker that answered `initialize`; its requests, its GET stream
    and its end, sent through the other worker, are forwarded there (they were 404s)."""
    server = workers_hub
    async with pinned_clients(server) as [(hub_a, _), (hub_b, _)]:
        alice, bob = await hub_a.register("mcp-alice"), await hub_a.register("mcp-bob")
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {await hub_a.api_key(alice)}"}
        init = await hub_a.http.post("/mcp", headers=headers, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "test", "version": "1"}}})
        assert mcp_messages(init)[0]["result"]["protocolVersion"] == "2025-11-25"
        headers["Mcp-Session-Id"] = init.headers["mcp-session-id"]
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await hub_b.http.post("/mcp", json=initialized, headers=headers)).status_code == 202
        for request_id, hub in enumerate([hub_a, hub_b] * 5, start=2):
            whoami = await mcp_call(hub.http, headers, request_id, "tools/call", name="whoami", arguments={})
            assert whoami["structuredContent"]["agent_id"] == alice.agent_id

        # The session's GET stream, opened through the other worker, carries what its worker pushes.
        await mcp_call(hub_b.http, headers, 20, "resources/subscribe", uri="parley://inbox")
        conversation_id = await direct(hub_a, bob, alice)
        async with hub_b.http.stream("GET", "/mcp", headers=headers) as stream:  # hub_b's one connection
            assert stream.status_code == 200
            await send(hub_a, bob, conversation_id, "are you there?")
            with anyio.fail_after(WAIT):
                async for line in stream.aiter_lines():
                    if line.startswith("data:") and "notifications/resources/updated" in line:
                        assert json.loads(line[5:])["params"]["uri"] == "parley://inbox"
                        break

        relayed = await hub_b.http.post("/mcp", headers=headers, json={
            "jsonrpc": "2.0", "id": 21, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}})
        assert len(relayed.headers.get_list("date")) == 1  # the owner's is not relayed beside the relay's own
        for made_up in ("9.feed", "1" * 5000 + ".feed"):  # the number of no worker: an unknown session
            unknown = await hub_b.http.post("/mcp", headers={**headers, "Mcp-Session-Id": made_up}, json={
                "jsonrpc": "2.0", "id": 22, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}})
            assert unknown.status_code == 404

        ended = await hub_b.http.delete("/mcp", headers=headers)
        assert ended.status_code in (200, 204)
        gone = await hub_a.http.post("/mcp", headers=headers, json={
            "jsonrpc": "2.0", "id": 30, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}})
        assert gone.status_code == 404


@SDK_CLIENT_TRIO_GET_STREAM
@needs_cluster
async def test_the_sdk_client_keeps_its_2025_session_across_workers(workers_hub: HubServer) -> None:
    """The SDK's own client, which opens several connections a session: each call lands on either worker."""
    server = workers_hub
    async with HubClient(server) as hub:
        agent = await hub.register("sdk-user")
        async with http_client(server, await hub.api_key(agent), "legacy") as client:
            for _ in range(30):
                assert (await call(client, "whoami"))["agent_id"] == agent.agent_id


@needs_cluster
async def test_sigterm_stops_every_worker_gracefully(start_workers: WorkersFactory) -> None:
    server = start_workers()
    workers = workers_of(server)
    async with pinned_clients(server) as [(hub_a, _), (hub_b, _)], AsyncExitStack() as stack:
        alice = await hub_a.register("alice")
        streams = [await stack.enter_async_context(event_socket(server, alice)) for _ in range(4)]
        assert sum([await websockets_on(hub_a), await websockets_on(hub_b)]) == len(streams)
        codes: list[int] = []

        async def stop() -> None:
            codes.append(await anyio.to_thread.run_sync(server.stop))

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop)
            closes = [(await stream.closed())[1] for stream in streams]
    assert codes == [0], server.log()
    assert [close.code for close in closes] == [1001] * len(streams)
    assert not living(workers)


@needs_cluster
async def test_a_worker_that_dies_stops_the_others_and_fails_the_command(start_workers: WorkersFactory) -> None:
    server = start_workers()
    workers = workers_of(server)
    os.kill(min(workers), signal.SIGKILL)
    assert server.process is not None
    code = await anyio.to_thread.run_sync(lambda: server.process.wait(timeout=WAIT))  # type: ignore[union-attr]
    assert code == 3
    assert f"(pid {min(workers)}) exited with -9; the other workers were stopped" in server.log()
    assert not living(workers)


@pytest.mark.parametrize(("store_env", "reason"), [
    ({}, "needs PostgreSQL and Redis: the embedded SQLite store has one writer"),
    ({"PARLEY_DATABASE_URL": "postgresql+psycopg://parley@127.0.0.1:1/parley"}, "needs PARLEY_REDIS_URL"),
])
def test_without_postgresql_and_redis_several_workers_are_refused(
    tmp_path: Path, store_env: dict[str, str], reason: str
) -> None:
    env = {name: value for name, value in os.environ.items() if name not in ("PARLEY_DATABASE_URL", "PARLEY_REDIS_URL")}
    env.update({"PARLEY_DATA_DIR": str(tmp_path / "data"), **store_env})
    refused = subprocess.run(parley_command("serve", "--workers", "2", "--port", str(free_port())), env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("parley: invalid configuration: --workers 2 " + reason), refused.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was made
