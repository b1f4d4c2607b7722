"""Workflow runs survive what kills hubs: a SIGKILL in the middle of many runs, and a node of two dying
with runs in hand. Every run ends once, and no step's side effect (a message sent) happens twice."""

import os
import sqlite3
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from .client import Agent, HubClient
from .conftest import ServerFactory, diagonal
from .messaging import direct, timeline
from .servers import HubServer, drop_postgres_database, redis_unavailable, start_nodes
from .test_workflows import FINISHED, chain

pytestmark = pytest.mark.anyio

RUNS = 30
SETTLE = 60.0


def two_sends(peer: Agent) -> list[dict[str, Any]]:
    """Send, wait a moment, send again: a run is likely mid-way when the hub dies."""
    return [{"id": "first", "type": "send", "to": peer.handle, "text": "first {{ execution.id }}"},
            {"id": "pause", "type": "delay", "seconds": 0.3},
            {"id": "second", "type": "send", "to": peer.handle, "text": "second {{ execution.id }}"}]


async def start_runs(hub: HubClient, owner: Agent, peer: Agent) -> tuple[str, list[str]]:
    workflow = await hub.call("workflows.create", {"name": "two sends", "nodes": two_sends(peer),
                                                   "edges": chain("first", "pause", "second")},
                              token=owner.access_token)
    ids = []
    for _ in range(RUNS):
        started = await hub.call("workflows.run", {"workflow_id": workflow["workflow_id"]}, token=owner.access_token)
        ids.append(started["execution_id"])
    return workflow["workflow_id"], ids


async def all_finished(hub: HubClient, owner: Agent, ids: list[str]) -> list[dict[str, Any]]:
    with anyio.fail_after(SETTLE):
        while True:
            runs = [await hub.call("executions.get", {"execution_id": i}, token=owner.access_token) for i in ids]
            if all(run["status"] in FINISHED for run in runs):
                return runs
            await anyio.sleep(0.2)


async def assert_each_sent_once(hub: HubClient, owner: Agent, peer: Agent, ids: list[str]) -> None:
    conversation_id = await direct(hub, owner, peer)
    bodies = Counter(m["body"] for m in await timeline(hub, owner, conversation_id) if m["body"])
    for execution_id in ids:
        assert (bodies[f"first {execution_id}"], bodies[f"second {execution_id}"]) == (1, 1), execution_id


@diagonal
async def test_runs_killed_midway_resume_after_a_restart_and_send_nothing_twice(start_hub: ServerFactory) -> None:
    server = start_hub()
    async with HubClient(server) as hub:
        owner, peer = await hub.register("owner"), await hub.register("peer")
        _, ids = await start_runs(hub, owner, peer)
        with anyio.fail_after(SETTLE):  # kill it once some runs have sent, before all have
            while (await hub.call("executions.get", {"execution_id": ids[0]}, token=owner.access_token))[
                    "status"] == "pending":
                await anyio.sleep(0.01)
        last = await hub.call("executions.get", {"execution_id": ids[-1]}, token=owner.access_token)
        assert last["status"] not in FINISHED  # a control: the crash comes mid-way
    await anyio.to_thread.run_sync(server.kill)
    await anyio.to_thread.run_sync(server.launch)
    async with HubClient(server) as hub:
        runs = await all_finished(hub, owner, ids)
        assert [run["status"] for run in runs] == ["completed"] * RUNS, [r["error"] for r in runs]
        await assert_each_sent_once(hub, owner, peer, ids)


@pytest.mark.parametrize(("anyio_backend", "store_kind"), [("trio", "sqlite")], indirect=True, scope="session")
async def test_a_step_cut_off_after_its_side_effect_repeats_it_as_a_no_op(start_hub: ServerFactory) -> None:
    """The crash that matters: the message was sent (committed) and the hub died before the step's result
    was. The store is left as that crash would leave it; the restarted hub runs the same attempt again."""
    server = start_hub()
    async with HubClient(server) as hub:
        owner, peer = await hub.register("owner"), await hub.register("peer")
        workflow = await hub.call("workflows.create", {"name": "once", "nodes": [
            {"id": "first", "type": "send", "to": peer.handle, "text": "only once {{ execution.id }}"},
            {"id": "pause", "type": "delay", "seconds": 30}], "edges": chain("first", "pause")},
            token=owner.access_token)
        execution_id = (await hub.call("workflows.run", {"workflow_id": workflow["workflow_id"]},
                                       token=owner.access_token))["execution_id"]
        with anyio.fail_after(SETTLE):
            while len((await hub.call("executions.get", {"execution_id": execution_id},
                                      token=owner.access_token))["nodes"]) < 2:
                await anyio.sleep(0.02)
    await anyio.to_thread.run_sync(server.kill)
    assert server.sqlite_path is not None

    def as_if_cut_off_after_sending(database: Path) -> None:
        with sqlite3.connect(database) as conn:
            conn.execute("DELETE FROM execution_nodes WHERE execution_id = ? AND node_id = 'pause'", (execution_id,))
            conn.execute("UPDATE execution_nodes SET status = 'running', output = NULL, finished_at = NULL "
                         "WHERE execution_id = ? AND node_id = 'first'", (execution_id,))
            conn.execute("UPDATE executions SET status = 'running' WHERE id = ?", (execution_id,))
            conn.execute("UPDATE jobs SET run_at = '2000-01-01 00:00:00.000000' WHERE subject = ?", (execution_id,))

    await anyio.to_thread.run_sync(as_if_cut_off_after_sending, server.sqlite_path)
    await anyio.to_thread.run_sync(server.launch)
    async with HubClient(server) as hub:
        with anyio.fail_after(SETTLE):
            while len((execution := await hub.call("executions.get", {"execution_id": execution_id},
                                                   token=owner.access_token))["nodes"]) < 2:
                await anyio.sleep(0.05)
        first = next(node for node in execution["nodes"] if node["node_id"] == "first")
        assert (first["status"], first["attempts"]) == ("completed", 1)
        conversation_id = await direct(hub, owner, peer)
        sent = [m for m in await timeline(hub, owner, conversation_id) if m["body"] == f"only once {execution_id}"]
        assert len(sent) == 1


@pytest.fixture
def two_nodes(tmp_path: Path, anyio_backend: str) -> Iterator[list[HubServer]]:
    if (reason := redis_unavailable()) is not None:
        pytest.skip(f"several-node tests skipped: {reason}")
    nodes = start_nodes(anyio_backend, tmp_path, 2, redis_url=os.environ["PARLEY_TEST_REDIS_URL"],
                        redis_channel=f"parley-test-{uuid.uuid4().hex[:12]}", workflow_lease_seconds="2",
                        job_poll_seconds="0.2")
    yield nodes
    for node in nodes:
        if node.process is not None:
            node.stop()
    drop_postgres_database(nodes[0].database_url)


@pytest.mark.parametrize("anyio_backend", ["asyncio"], indirect=True, scope="session")
async def test_runs_of_a_dead_node_are_finished_by_another_once(two_nodes: list[HubServer]) -> None:
    node_a, node_b = two_nodes
    async with HubClient(node_a) as hub_a:
        owner, peer = await hub_a.register("owner"), await hub_a.register("peer")
        _, ids = await start_runs(hub_a, owner, peer)
        await anyio.sleep(0.2)  # both nodes at work
    await anyio.to_thread.run_sync(node_a.kill)
    async with HubClient(node_b) as hub_b:
        runs = await all_finished(hub_b, owner, ids)
        assert [run["status"] for run in runs] == ["completed"] * RUNS, [r["error"] for r in runs]
        await assert_each_sent_once(hub_b, owner, peer, ids)
