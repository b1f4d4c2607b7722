"""Several nodes: hub processes on different ports sharing one PostgreSQL database and one Redis.

Redis sits behind a TCP proxy the test owns, so a test can take it away from the hubs the way a
network failure would. What must hold: an agent on node A gets what is sent through node B live and
in order, both nodes agree on every cursor and seq, a revocation on one node holds on the other,
and losing Redis delays events (caught up from the database) but loses none.
"""

import logging
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from bench.report import percentile

from .client import Agent, HubClient, RpcError
from .inprocess import local_hub
from .messaging import WAIT, EventSocket, all_events, bodies, direct, event_socket, group, head, send, timeline
from .servers import (
    HubServer,
    create_postgres_database,
    drop_postgres_database,
    parley_command,
    redis_address,
    redis_unavailable,
    start_nodes,
)
from .tcp_proxy import TcpProxy

if (_reason := redis_unavailable()) is not None:
    pytest.skip(f"several-node tests skipped: {_reason}", allow_module_level=True)

LIVE_CATCH_UP_SECONDS = "60"
"""So long that anything a node gets sooner came over Redis, not from the catch-up."""
DEGRADED_CATCH_UP_SECONDS = "0.3"


@dataclass
class Cluster:
    nodes: list[HubServer]
    redis: TcpProxy

    def linked(self, node: HubServer) -> bool:
        return bool(httpx.get(node.url + "/health", timeout=5).json()["cluster"]["linked"])

    async def until_linked(self, linked: bool) -> None:
        with anyio.fail_after(WAIT):
            while ([await anyio.to_thread.run_sync(self.linked, node) for node in self.nodes]
                   != [linked] * len(self.nodes)):
                await anyio.sleep(0.05)


ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def start_cluster(tmp_path: Path, anyio_backend: str) -> Iterator[ClusterFactory]:
    """Start `count` nodes on one fresh database, with Redis behind a proxy the test can cut (or
    start cut, with `redis_away`)."""
    started: list[HubServer] = []
    with TcpProxy(*redis_address(os.environ["PARLEY_TEST_REDIS_URL"])) as proxy:

        def start(count: int = 2, catch_up_seconds: str = LIVE_CATCH_UP_SECONDS, redis_away: bool = False) -> Cluster:
            if redis_away:
                proxy.cut()
            started.extend(start_nodes(
                anyio_backend, tmp_path, count, redis_url=f"redis://127.0.0.1:{proxy.port}/0",
                redis_channel=f"parley-test-{uuid.uuid4().hex[:12]}", catch_up_seconds=catch_up_seconds,
            ))
            return Cluster(started, proxy)

        yield start
        codes = [node.stop() for node in started]
    if started:
        drop_postgres_database(started[0].database_url)
    assert codes == [0] * len(started), "\n".join(node.log() for node in started)


async def _clients(stack: AsyncExitStack, cluster: Cluster) -> list[HubClient]:
    return [await stack.enter_async_context(HubClient(node)) for node in cluster.nodes]


async def test_an_agent_on_one_node_gets_what_is_sent_through_another_live_and_in_order(
    start_cluster: ClusterFactory, record_property: Callable[[str, Any], None]
) -> None:
    cluster = start_cluster()
    node_a, node_b = cluster.nodes
    async with AsyncExitStack() as stack:
        hub_a, hub_b = await _clients(stack, cluster)
        alice, bob = await hub_a.register("alice"), await hub_b.register("bob")
        conversation_id = await direct(hub_b, bob, alice)
        total = 100
        sent_at: dict[str, float] = {}
        latencies: list[float] = []
        async with event_socket(node_a, alice, after=None) as stream:

            async def receive() -> None:
                for _ in range(total):
                    event = await stream.next()
                    latencies.append(time.perf_counter() - sent_at[event["message"]["body"]])

            async with anyio.create_task_group() as tg:
                tg.start_soon(receive)
                for i in range(total):
                    sent_at[f"m{i}"] = time.perf_counter()
                    await send(hub_b, bob, conversation_id, f"m{i}")
                    await anyio.sleep(0.005)
        assert [m["body"] for m in await timeline(hub_a, alice, conversation_id)][1:] == [f"m{i}" for i in range(total)]
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    record_property("cross_node_latency_ms", {"p50": round(p50, 2), "p99": round(p99, 2)})
    print(f"cross-node delivery, send through B to the event on A: p50 {p50:.1f} ms, p99 {p99:.1f} ms")


async def test_nodes_agree_on_every_cursor_and_seq_under_concurrent_senders(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster()
    async with AsyncExitStack() as stack:
        hubs = await _clients(stack, cluster)
        agents = [await hubs[i % 2].register(f"peer{i}") for i in range(4)]
        conversation_id = await group(hubs[0], agents[0], *agents[1:])
        starts = [await head(hubs[0], agent) for agent in agents]
        streams: list[EventSocket] = [
            await stack.enter_async_context(event_socket(cluster.nodes[i % 2], agent, after=starts[i]))
            for i, agent in enumerate(agents)
        ]
        per_agent = 15

        async def sender(index: int) -> None:
            for n in range(per_agent):  # each agent through the node the other half is not on
                await send(hubs[(index + 1) % 2], agents[index], conversation_id, f"{index}/{n}")

        async with anyio.create_task_group() as tg:
            for index in range(len(agents)):
                tg.start_soon(sender, index)
        total = per_agent * len(agents)
        received = [await stream.take(total) for stream in streams]

        keys = [[(e["cursor"], e["message"]["message_id"]) for e in events] for events in received]
        assert all(seen == keys[0] for seen in keys)
        assert [e["message"]["seq"] for e in received[0]] == list(range(2, total + 2))
        for index, agent in enumerate(agents):
            listed_on_a = await all_events(hubs[0], agent, after=starts[index])
            listed_on_b = await all_events(hubs[1], agent, after=starts[index])
            assert [(e["cursor"], e["message"]["message_id"]) for e in listed_on_a] == keys[0]
            assert listed_on_a == listed_on_b


async def test_a_revocation_on_one_node_holds_on_the_other_at_once(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster()
    async with AsyncExitStack() as stack:
        hub_a, hub_b = await _clients(stack, cluster)
        alice = await hub_a.register("alice")
        assert (await hub_b.call("auth.whoami", token=alice.access_token))["agent"]["agent_id"] == alice.agent_id
        await hub_a.call("auth.whoami", token=alice.access_token)  # cached on A now
        await hub_b.call("auth.logout", {"everywhere": True}, token=alice.access_token)
        await _until_refused(hub_a, alice)


async def test_a_key_revoked_or_an_agent_suspended_on_one_node_is_refused_on_the_other_at_once(
    start_cluster: ClusterFactory,
) -> None:
    """Each node keeps the API keys in use (by key id, with the stored hash only); the credential notice
    that carries a revocation or a suspension makes the other node drop them."""
    cluster = start_cluster()
    async with AsyncExitStack() as stack:
        hub_a, hub_b = await _clients(stack, cluster)
        alice, bob = await hub_a.register("alice"), await hub_a.register("bob")
        doomed, kept, bobs = await hub_a.api_key(alice), await hub_a.api_key(alice), await hub_a.api_key(bob)
        for key in (doomed, kept, bobs, doomed):  # used on B, so B holds them
            assert (await hub_b.call("auth.whoami", token=key))["agent"]["agent_id"] in (alice.agent_id, bob.agent_id)
        doomed_id = (await hub_b.call("auth.whoami", token=doomed))["credential"]["key_id"]

        await hub_a.call("keys.revoke", {"key_id": doomed_id}, token=alice.access_token)
        await hub_a.call("admin.agents.suspend", {"agent": bob.handle}, token=hub_a.admin_key)

        await _until_refused(hub_b, doomed)
        await _until_refused(hub_b, bobs, "forbidden")
        assert (await hub_b.call("auth.whoami", token=kept))["agent"]["agent_id"] == alice.agent_id


async def test_a_page_read_on_one_node_shows_what_another_node_changed(start_cluster: ClusterFactory) -> None:
    """Each node keeps the messages it has shown (`hub.services.message_views`); a change made through
    another node must show on its next read all the same."""
    cluster = start_cluster()
    async with AsyncExitStack() as stack:
        hub_a, hub_b = await _clients(stack, cluster)
        alice, bob = await hub_a.register("alice"), await hub_b.register("bob")
        conversation_id = await direct(hub_a, alice, bob)
        edited = await send(hub_a, alice, conversation_id, "draft")
        doomed = await send(hub_a, alice, conversation_id, "regrettable")
        assert await bodies(hub_b, bob, conversation_id) == ["draft", "regrettable"]  # B keeps both
        await hub_a.call("messages.edit", {"message_id": edited["message_id"], "body": "final"},
                         token=alice.access_token)
        await hub_a.call("messages.delete", {"message_id": doomed["message_id"]}, token=alice.access_token)
        assert await bodies(hub_b, bob, conversation_id) == ["final", None]


@pytest.mark.parametrize("anyio_backend", ["asyncio"], indirect=True, scope="session")
async def test_a_search_on_one_node_finds_what_another_node_indexed_and_not_what_it_removed(
    start_cluster: ClusterFactory,
) -> None:
    """Each node ranks from its own in-memory copy of a collection's terms; the copy must follow the
    store, whichever node wrote."""
    cluster = start_cluster()
    async with AsyncExitStack() as stack:
        hub_a, hub_b = await _clients(stack, cluster)
        alice = await hub_a.register("alice")

        async def found(hub: HubClient, query: str) -> list[tuple[str, float]]:
            result = await hub.call("memories.search", {"query": query, "mode": "lexical"}, token=alice.access_token)
            return [(hit["memory"]["memory_id"], hit["score"]) for hit in result["items"]]

        async def found_on_b(query: str) -> list[str]:
            return [memory_id for memory_id, _ in await found(hub_b, query)]

        async def remember_on_a(content: str) -> str:
            created = await hub_a.call("memories.create", {"content": content}, token=alice.access_token)
            return str(created["memory"]["memory_id"])

        nests = await remember_on_a("The heron nests by the lake.")
        assert await found_on_b("heron") == [nests]  # B holds a copy now
        fishes = await remember_on_a("A heron fishes at dawn, a heron waits.")
        assert await found_on_b("heron") == [fishes, nests]
        await hub_a.call("memories.update", {"memory_id": nests, "content": "The stork nests by the lake."},
                         token=alice.access_token)
        assert (await found_on_b("heron"), await found_on_b("stork")) == ([fishes], [nests])
        await hub_a.call("memories.erase", {"memory_id": fishes}, token=alice.access_token)
        flies = await remember_on_a("A heron flies over the lake.")
        assert await found_on_b("heron") == [flies]
        assert await found(hub_b, "heron lake") == await found(hub_a, "heron lake")  # A's copy is new: B's is true


async def test_losing_redis_delays_events_through_the_database_and_loses_none(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(catch_up_seconds=DEGRADED_CATCH_UP_SECONDS)
    node_a, _ = cluster.nodes
    async with AsyncExitStack() as stack:
        hub_a, hub_b = await _clients(stack, cluster)
        alice, bob = await hub_a.register("alice"), await hub_b.register("bob")
        conversation_id = await direct(hub_b, bob, alice)
        stream = await stack.enter_async_context(event_socket(node_a, alice, after=None))
        await send(hub_b, bob, conversation_id, "before")
        assert (await stream.next())["message"]["body"] == "before"

        cluster.redis.cut()
        await cluster.until_linked(False)
        during = [f"during {i}" for i in range(20)]
        for body in during:
            await send(hub_b, bob, conversation_id, body)
        assert [e["message"]["body"] for e in await stream.take(len(during))] == during
        # Credential notices are lost too: the catch-up re-reads the credential cache instead.
        await hub_a.call("auth.whoami", token=alice.access_token)
        carol = await hub_a.register("carol")
        await hub_a.call("auth.whoami", token=carol.access_token)
        carols_key = await hub_b.api_key(carol)
        carols_key_id = (await hub_a.call("auth.whoami", token=carols_key))["credential"]["key_id"]  # A holds it
        await hub_b.call("auth.logout", {"everywhere": True}, token=carol.access_token)
        await _until_refused(hub_a, carol)
        await hub_b.call("keys.revoke", {"key_id": carols_key_id}, token=carols_key)
        await _until_refused(hub_a, carols_key)

        cluster.redis.restore()
        await cluster.until_linked(True)
        await send(hub_b, bob, conversation_id, "after")
        assert (await stream.next())["message"]["body"] == "after"
        listed = [e["message"]["body"] for e in await all_events(hub_a, alice, after=stream.start or 0)]
        assert listed == ["before", *during, "after"]


async def test_a_node_starts_and_serves_while_redis_is_away_and_links_when_it_returns(
    start_cluster: ClusterFactory,
) -> None:
    cluster = start_cluster(catch_up_seconds=DEGRADED_CATCH_UP_SECONDS, redis_away=True)
    await cluster.until_linked(False)
    async with AsyncExitStack() as stack:
        hub_a, hub_b = await _clients(stack, cluster)
        alice, bob = await hub_a.register("alice"), await hub_b.register("bob")
        conversation_id = await direct(hub_b, bob, alice)
        stream = await stack.enter_async_context(event_socket(cluster.nodes[0], alice, after=None))
        await send(hub_b, bob, conversation_id, "while away")
        assert (await stream.next())["message"]["body"] == "while away"
        cluster.redis.restore()
        await cluster.until_linked(True)


@pytest.mark.parametrize("after_seconds", [0.01, 0.05, 0.3])
async def test_a_node_closed_while_linked_or_linking_stops_cleanly_and_says_nothing_of_an_outage(
        tmp_path: Path, anyio_backend: str, after_seconds: float, caplog: pytest.LogCaptureFixture) -> None:
    """Closing cancels the link. coredis may end a connection cancelled under it with an error of its own
    (ClosedResourceError, or the subscription's end): that is the close, not an outage to warn of, and
    on trio it escaped the hub's task group and failed the shutdown."""
    settings = {"redis_url": os.environ["PARLEY_TEST_REDIS_URL"],
                "redis_channel": f"parley-test-{uuid.uuid4().hex[:12]}"}
    with caplog.at_level(logging.WARNING, logger="hub.cluster"), anyio.fail_after(WAIT):
        async with local_hub(tmp_path, "postgres", **settings):
            await anyio.sleep(after_seconds)
    assert [record.getMessage() for record in caplog.records if record.name == "hub.cluster"] == []


def test_nodes_starting_together_migrate_one_after_another(tmp_path: Path) -> None:
    database_url = create_postgres_database()
    try:
        env = {**os.environ, "PARLEY_DATABASE_URL": database_url, "PARLEY_DATA_DIR": str(tmp_path)}
        migrations = [subprocess.Popen(parley_command("migrate"), env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True) for _ in range(3)]
        outputs = [process.communicate(timeout=60)[0] for process in migrations]
        assert [process.returncode for process in migrations] == [0, 0, 0], outputs
    finally:
        drop_postgres_database(database_url)


async def _until_refused(hub: HubClient, credential: Agent | str, code: str = "unauthorized") -> None:
    """Until `credential` (an agent's access token, or an API key) is refused with `code`."""
    token = credential.access_token if isinstance(credential, Agent) else credential
    with anyio.fail_after(WAIT):
        while True:
            try:
                await hub.call("auth.whoami", token=token)
            except RpcError as error:
                assert error.code == code, error.error
                return
            await anyio.sleep(0.02)
