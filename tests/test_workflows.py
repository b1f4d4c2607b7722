"""Workflows against real hubs: saving checks the whole graph, versions, runs of every step type with
live events, waiting steps answered by other agents, retries, timeouts, cancelling, and who may see what."""

import json
from typing import Any

import anyio
import pytest

from .client import Agent, HubClient
from .messaging import WAIT, all_events, raises_code

pytestmark = pytest.mark.anyio

FINISHED = ("completed", "failed", "cancelled", "timed_out")


async def save(hub: HubClient, agent: Agent, nodes: list[dict[str, Any]], edges: list[dict[str, Any]] | None = None,
               **definition: Any) -> dict[str, Any]:
    return await hub.call("workflows.create", {"name": definition.pop("name", "test"), "nodes": nodes,
                                               "edges": edges or [], **definition}, token=agent.access_token)


def chain(*node_ids: str) -> list[dict[str, str]]:
    return [{"from": a, "to": b} for a, b in zip(node_ids, node_ids[1:])]


async def start(hub: HubClient, agent: Agent, workflow: dict[str, Any], given: Any = None, **params: Any) -> str:
    started = await hub.call("workflows.run", {"workflow_id": workflow["workflow_id"], "input": given or {},
                                               **params}, token=agent.access_token)
    return str(started["execution_id"])


async def finished(hub: HubClient, agent: Agent, execution_id: str) -> dict[str, Any]:
    with anyio.fail_after(WAIT):
        while (execution := await hub.call("executions.get", {"execution_id": execution_id, "wait_seconds": 5},
                                           token=agent.access_token))["status"] not in FINISHED:
            pass
    return execution  # type: ignore[no-any-return]


async def waiting(hub: HubClient, agent: Agent, execution_id: str, node_id: str) -> dict[str, Any]:
    """The node once it waits."""
    with anyio.fail_after(WAIT):
        while True:
            execution = await hub.call("executions.get", {"execution_id": execution_id}, token=agent.access_token)
            node = next((n for n in execution["nodes"] if n["node_id"] == node_id), None)
            if node is not None and node["status"] == "waiting":
                return node
            assert execution["status"] not in FINISHED, execution
            await anyio.sleep(0.05)


def outputs(execution: dict[str, Any]) -> dict[str, Any]:
    return {node["node_id"]: node["output"] for node in execution["nodes"]}


def statuses(execution: dict[str, Any]) -> dict[str, str]:
    return {node["node_id"]: node["status"] for node in execution["nodes"]}


# -- saving -------------------------------------------------------------------------------------------------

BAD_DEFINITIONS = [
    ({"nodes": [{"id": "a", "type": "teleport"}]}, "nodes.0"),
    ({"nodes": [{"id": "a", "type": "send", "text": "hi"}]}, "nodes[0]"),  # neither `to` nor a conversation
    ({"nodes": [{"id": "a", "type": "transform", "value": 1}], "edges": [{"from": "a", "to": "b"}]}, "edges[0]"),
    ({"nodes": [{"id": "a", "type": "transform", "value": 1}, {"id": "b", "type": "transform", "value": 2},
                {"id": "c", "type": "transform", "value": 3}],
      "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "b"}]}, "nodes[1]"),
    ({"nodes": [{"id": "a", "type": "transform", "value": 1}, {"id": "lost", "type": "transform", "value": 2}]},
     "nodes[1]"),
    ({"nodes": [{"id": "a", "type": "condition", "if": "true"}, {"id": "b", "type": "transform", "value": 2}],
      "edges": [{"from": "a", "to": "b", "when": "maybe"}]}, "edges[0].when"),
    ({"nodes": [{"id": "a", "type": "send", "to": "x", "text": "{{ input.name "}]}, "nodes[0].text"),
    ({"nodes": [{"id": "a", "type": "transform", "value": "{% for x in y %}{% endfor %}"}]}, "nodes[0].value"),
    ({"nodes": [{"id": "a", "type": "call", "operation": "nothing.here"}]}, "nodes[0].operation"),
    ({"nodes": [{"id": "a", "type": "call", "operation": "memories.create", "params": {"content": "x"}}]},
     "nodes[0].operation"),  # memories:write not granted
    ({"nodes": [{"id": "a", "type": "call", "operation": "keys.create", "params": {}}]}, "nodes[0].operation"),
    ({"nodes": [{"id": "a", "type": "transform", "value": 1}], "input_schema": {"type": "nonsense"}}, "input_schema"),
    ({"nodes": [{"id": "m", "type": "map", "items": "[1]", "nodes": [{"id": "a", "type": "transform", "value": 1},
                                                                      {"id": "a", "type": "transform", "value": 2}]}]},
     "nodes[0].nodes[1].id"),
]


@pytest.mark.parametrize(("definition", "path"), BAD_DEFINITIONS)
async def test_saving_checks_the_whole_graph_and_says_where(hub: HubClient, alice: Agent, definition: dict[str, Any],
                                                           path: str) -> None:
    with raises_code("invalid_request") as caught:
        await hub.call("workflows.create", {"name": "bad", **definition}, token=alice.access_token)
    details = caught.value.error["data"]["details"]
    where = details.get("path") or details["errors"][0]["field"]
    assert where.startswith(path), (where, caught.value.error)
    assert (await hub.call("workflows.list", {}, token=alice.access_token))["items"] == []


async def test_a_grant_beyond_the_saving_credential_is_forbidden(hub: HubClient, alice: Agent) -> None:
    key = (await hub.call("keys.create", {"name": "narrow", "scopes": ["workflows:write", "workflows:read"]},
                          token=alice.access_token))["api_key"]
    with raises_code("forbidden"):
        await hub.call("workflows.create", {"name": "greedy", "scopes": ["memories:write"], "nodes": [
            {"id": "a", "type": "transform", "value": 1}]}, token=key)
    # Built-in steps act as the owner: the key that saves them must hold what they do.
    for step, needed in (({"type": "send", "to": "someone", "text": "hi"}, "messages:write"),
                         ({"type": "remember", "content": "x"}, "memories:write"),
                         ({"type": "search_documents", "query": "x"}, "documents:read")):
        with raises_code("forbidden") as caught:
            await hub.call("workflows.create", {"name": "greedy", "nodes": [{"id": "a", **step}]}, token=key)
        assert caught.value.error["data"]["details"] == {"path": "nodes[0]", "required_scope": needed}
    assert (await hub.call("workflows.list", {}, token=alice.access_token))["items"] == []


async def test_every_save_is_a_version_and_restoring_makes_a_new_one(hub: HubClient, alice: Agent) -> None:
    first = await save(hub, alice, [{"id": "a", "type": "transform", "value": "one"}], name="v")
    second = await hub.call("workflows.update", {"workflow_id": first["workflow_id"], "name": "v", "nodes": [
        {"id": "a", "type": "transform", "value": "two"}]}, token=alice.access_token)
    assert (first["version"], second["version"]) == (1, 2)
    old = await hub.call("workflows.get", {"workflow_id": first["workflow_id"], "version": 1}, token=alice.access_token)
    assert old["definition"]["nodes"][0]["value"] == "one"
    restored = await hub.call("workflows.restore", {"workflow_id": first["workflow_id"], "version": 1},
                              token=alice.access_token)
    assert restored["version"] == 3 and restored["definition"] == old["definition"]
    versions = await hub.call("workflows.versions", {"workflow_id": first["workflow_id"]}, token=alice.access_token)
    assert [(v["version"], v["restored_from"]) for v in versions["items"]] == [(3, 1), (2, None), (1, None)]
    execution = await finished(hub, alice, await start(hub, alice, first))
    assert (execution["version"], execution["output"]) == (3, "one")


# -- running --------------------------------------------------------------------------------------------------


async def test_an_ask_waits_for_the_reply_then_the_run_goes_on_with_live_events(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    workflow = await save(hub, alice, [
        {"id": "prep", "type": "transform", "value": {"question": "Is {{ input.city }} sunny?"}},
        {"id": "ask", "type": "ask", "to": bob.handle, "text": "{{ steps.prep.question }}", "wait_seconds": 30},
        {"id": "check", "type": "condition", "if": "'yes' in steps.ask.text | lower"},
        {"id": "cheer", "type": "send", "to": bob.handle, "text": "Noted: {{ steps.ask.text }}"},
        {"id": "sulk", "type": "transform", "value": "{{ 'no sun' }}"},
    ], chain("prep", "ask", "check") + [{"from": "check", "to": "cheer", "when": "true"},
                                         {"from": "check", "to": "sulk", "when": "false"}],
        input_schema={"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}},
        output={"answer": "{{ steps.ask.text }}", "sent": "{{ steps.cheer.seq }}"})
    execution_id = await start(hub, alice, workflow, {"city": "Lisbon"})
    asked = await waiting(hub, alice, execution_id, "ask")
    requests = await hub.call("workflows.requests", {}, token=bob.access_token)
    assert [(r["execution_id"], r["kind"]) for r in requests["items"]] == [(execution_id, "ask")]
    question = await hub.call("messages.list", {"conversation_id": asked["waiting_for"]["conversation_id"]},
                              token=bob.access_token)
    assert question["items"][-1]["body"] == "Is Lisbon sunny?"
    await hub.call("messages.send", {"conversation_id": asked["waiting_for"]["conversation_id"],
                                     "body": "Yes, all week."}, token=bob.access_token)
    execution = await finished(hub, alice, execution_id)
    assert execution["status"] == "completed", execution
    assert statuses(execution) == {"prep": "completed", "ask": "completed", "check": "completed",
                                   "cheer": "completed", "sulk": "skipped"}
    assert execution["output"]["answer"] == "Yes, all week." and isinstance(execution["output"]["sent"], int)
    events = [e for e in await all_events(hub, alice) if e["execution"] and
              e["execution"]["execution_id"] == execution_id]
    kinds = [(e["type"], e["node"]["node_id"] if e["node"] else None) for e in events]
    assert kinds[0] == ("execution.started", None) and kinds[-1] == ("execution.completed", None)
    assert kinds.index(("node.completed", "ask")) < kinds.index(("node.started", "check"))
    assert [e["cursor"] for e in events] == sorted(e["cursor"] for e in events)
    bobs = await hub.call("messages.list", {"conversation_id": asked["waiting_for"]["conversation_id"]},
                          token=bob.access_token)
    assert bobs["items"][-1]["body"] == "Noted: Yes, all week."


async def test_an_approval_is_requested_answered_and_decides_the_branch(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    workflow = await save(hub, alice, [
        {"id": "gate", "type": "approval", "approver": bob.handle, "prompt": "Ship {{ input.release }}?"},
        {"id": "decide", "type": "condition", "if": "steps.gate.approved"},
        {"id": "ship", "type": "transform", "value": "shipped"},
        {"id": "hold", "type": "transform", "value": "held"},
    ], chain("gate", "decide") + [{"from": "decide", "to": "ship", "when": "true"},
                                   {"from": "decide", "to": "hold", "when": "false"}])
    results = []
    for approve in (True, False):
        execution_id = await start(hub, alice, workflow, {"release": "1.2"})
        await waiting(hub, alice, execution_id, "gate")
        with raises_code("not_found"):  # only who is asked may answer
            await hub.call("workflows.respond", {"execution_id": execution_id, "node_id": "gate", "approve": True},
                           token=alice.access_token)
        answered = await hub.call("workflows.respond", {"execution_id": execution_id, "node_id": "gate",
                                                        "approve": approve, "text": "ok"}, token=bob.access_token)
        assert answered["answered"] == ("approved" if approve else "rejected")
        with raises_code("not_found"):  # the approver answers; the run stays its owner's
            await hub.call("executions.get", {"execution_id": execution_id}, token=bob.access_token)
        results.append((await finished(hub, alice, execution_id))["output"])
    assert results == ["shipped", "held"]
    requests = [e for e in await all_events(hub, bob) if e["type"] == "workflow.request"]
    assert len(requests) == 2 and requests[0]["node"]["waiting_for"]["prompt"] == "Ship 1.2?"


async def test_waiting_steps_time_out_and_a_run_past_its_limit_times_out(hub: HubClient, alice: Agent,
                                                                         bob: Agent) -> None:
    asks = await save(hub, alice, [{"id": "ask", "type": "ask", "to": bob.handle, "text": "quick?",
                                    "wait_seconds": 0.5}])
    execution = await finished(hub, alice, await start(hub, alice, asks))
    assert execution["status"] == "failed" and execution["error"]["code"] == "timed_out"
    assert execution["error"]["node_id"] == "ask"
    slow = await save(hub, alice, [{"id": "nap", "type": "delay", "seconds": 60}], timeout_seconds=0.5)
    execution = await finished(hub, alice, await start(hub, alice, slow))
    assert execution["status"] == "timed_out"


async def test_map_runs_a_sub_graph_per_item_with_bounded_concurrency(hub: HubClient, alice: Agent) -> None:
    workflow = await save(hub, alice, [
        {"id": "each", "type": "map", "items": "input.numbers", "concurrency": 2, "nodes": [
            {"id": "square", "type": "transform", "value": "{{ item * item }}"},
            {"id": "label", "type": "transform", "value": "{{ index }}:{{ steps.square }}"}],
         "edges": chain("square", "label")},
    ])
    execution = await finished(hub, alice, await start(hub, alice, workflow, {"numbers": [1, 2, 3, 4, 5]}))
    assert execution["output"] == ["0:1", "1:4", "2:9", "3:16", "4:25"]
    failing = await save(hub, alice, [
        {"id": "each", "type": "map", "items": "input.numbers", "nodes": [
            {"id": "divide", "type": "transform", "value": "{{ 10 / item }}"}]}])
    execution = await finished(hub, alice, await start(hub, alice, failing, {"numbers": [1, 0, 2]}))
    assert execution["status"] == "failed" and execution["error"]["code"] == "item_failed"
    assert execution["error"]["details"]["index"] == 1


async def test_a_failed_step_is_retried_then_fails_the_run_unless_it_may_go_on(hub: HubClient, alice: Agent) -> None:
    flaky = {"id": "call", "type": "call", "operation": "messages.get", "params": {"message_id": "msg_" + "0" * 26},
             "retry": {"max_attempts": 3, "backoff_seconds": 0.1}}
    workflow = await save(hub, alice, [flaky], scopes=["messages:read"])
    execution = await finished(hub, alice, await start(hub, alice, workflow))
    assert execution["status"] == "failed" and execution["error"]["code"] == "not_found"
    assert execution["nodes"][0]["attempts"] == 1  # not_found is not worth another attempt
    tolerant = await save(hub, alice, [{**flaky, "continue_on_error": True},
                                       {"id": "after", "type": "transform", "value": "{{ steps.call.error.code }}"}],
                          chain("call", "after"), scopes=["messages:read"])
    execution = await finished(hub, alice, await start(hub, alice, tolerant))
    assert (execution["status"], execution["output"]) == ("completed", "not_found")


async def test_input_is_checked_against_the_schema_and_an_idempotency_key_returns_the_first_run(
    hub: HubClient, alice: Agent
) -> None:
    workflow = await save(hub, alice, [{"id": "a", "type": "transform", "value": "{{ input.n + 1 }}"}],
                          input_schema={"type": "object", "required": ["n"],
                                        "properties": {"n": {"type": "integer", "maximum": 10}}})
    with raises_code("invalid_request") as caught:
        await start(hub, alice, workflow, {"n": 11})
    assert caught.value.error["data"]["details"]["errors"][0]["field"] == "input.n"
    first = await start(hub, alice, workflow, {"n": 1}, idempotency_key="once")
    again = await hub.call("workflows.run", {"workflow_id": workflow["workflow_id"], "input": {"n": 1},
                                             "idempotency_key": "once"}, token=alice.access_token)
    assert again == {"execution_id": first, "workflow_id": workflow["workflow_id"], "version": 1}
    with raises_code("conflict") as caught:
        await hub.call("workflows.run", {"workflow_id": workflow["workflow_id"], "input": {"n": 2},
                                         "idempotency_key": "once"}, token=alice.access_token)
    assert caught.value.error["data"]["details"] == {"field": "idempotency_key", "execution_id": first}
    assert (await finished(hub, alice, first))["output"] == 2
    listed = await hub.call("executions.list", {"workflow_id": workflow["workflow_id"]}, token=alice.access_token)
    assert [item["execution_id"] for item in listed["items"]] == [first]
    stats = await hub.call("executions.stats", {"workflow_id": workflow["workflow_id"]}, token=alice.access_token)
    assert stats["workflows"][0]["counts"] == {"completed": 1} and stats["workflows"][0]["success_rate"] == 1.0


async def test_cancelling_a_waiting_run_ends_it_and_deleting_a_workflow_cancels_its_runs(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    workflow = await save(hub, alice, [{"id": "ask", "type": "ask", "to": bob.handle, "text": "hello?"}])
    first, second = await start(hub, alice, workflow), await start(hub, alice, workflow)
    await waiting(hub, alice, first, "ask")
    cancelled = await hub.call("executions.cancel", {"execution_id": first}, token=alice.access_token)
    assert cancelled["status"] == "cancelled"
    await hub.call("workflows.delete", {"workflow_id": workflow["workflow_id"]}, token=alice.access_token)
    assert (await finished(hub, alice, second))["status"] == "cancelled"
    with raises_code("not_found"):
        await start(hub, alice, workflow)
    assert (await hub.call("workflows.requests", {}, token=bob.access_token))["items"] == []
    assert any(e["type"] == "execution.cancelled" for e in await all_events(hub, alice))


async def test_nobody_else_sees_or_runs_a_workflow(hub: HubClient, alice: Agent, bob: Agent) -> None:
    workflow = await save(hub, alice, [{"id": "a", "type": "transform", "value": 1}])
    execution_id = await start(hub, alice, workflow)
    for method, params in (("workflows.get", {"workflow_id": workflow["workflow_id"]}),
                           ("workflows.run", {"workflow_id": workflow["workflow_id"]}),
                           ("workflows.delete", {"workflow_id": workflow["workflow_id"]}),
                           ("executions.get", {"execution_id": execution_id}),
                           ("executions.cancel", {"execution_id": execution_id})):
        with raises_code("not_found"):
            await hub.call(method, params, token=bob.access_token)
    assert (await hub.call("workflows.list", {}, token=bob.access_token))["items"] == []
    assert (await hub.call("executions.list", {}, token=bob.access_token))["items"] == []


async def test_steps_act_as_the_owner_through_the_hubs_own_operations(hub: HubClient, alice: Agent) -> None:
    workflow = await save(hub, alice, [
        {"id": "keep", "type": "remember", "content": "The {{ input.thing }} is in the blue box."},
        {"id": "find", "type": "recall", "query": "where is the {{ input.thing }}", "limit": 1},
        {"id": "note", "type": "call", "operation": "memories.stats", "params": {}},
    ], chain("keep", "find", "note"), scopes=["memories:read"])
    execution = await finished(hub, alice, await start(hub, alice, workflow, {"thing": "stapler"}))
    assert execution["status"] == "completed", execution
    found = outputs(execution)["find"]["memories"]
    assert [m["memory_id"] for m in found] == [outputs(execution)["keep"]["memory_id"]]
    mine = await hub.call("memories.search", {"query": "stapler"}, token=alice.access_token)
    assert mine["items"][0]["memory"]["author_id"] == alice.agent_id  # written as alice


async def test_an_http_step_may_not_reach_private_addresses(hub: HubClient, alice: Agent) -> None:
    workflow = await save(hub, alice, [{"id": "peek", "type": "http", "url": "http://127.0.0.1:9/admin"}])
    execution = await finished(hub, alice, await start(hub, alice, workflow))
    assert execution["status"] == "failed" and execution["error"]["code"] == "refused"
    assert "loopback" in execution["error"]["message"]


async def _streamed_run(hub: HubClient, workflow: dict[str, Any], credential: str,
                        headers: dict[str, str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The SSE frames of `POST /api/workflows/{id}/runs?stream=true`, read until the stream ends."""
    frames: list[tuple[str, dict[str, Any]]] = []
    async with hub.http.stream("POST", f"/api/workflows/{workflow['workflow_id']}/runs?stream=true",
                               json={"input": {}}, headers={"authorization": f"Bearer {credential}", **(headers or {})}
                               ) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        event = None
        with anyio.fail_after(WAIT):
            async for line in reply.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event is not None:
                    frames.append((event, json.loads(line.removeprefix("data: "))))
    return frames


async def test_a_run_streams_its_own_events_as_sse_until_it_ends(hub: HubClient, alice: Agent) -> None:
    workflow = await save(hub, alice, [{"id": "one", "type": "transform", "value": 1},
                                       {"id": "two", "type": "delay", "seconds": 0.2},
                                       {"id": "three", "type": "transform", "value": "{{ steps.one + 2 }}"}],
                          chain("one", "two", "three"))
    other = await start(hub, alice, workflow)  # another run's events stay out of the stream
    # Watching a run is reading it: a key for workflows alone will do.
    key = await hub.api_key(alice, scopes=["workflows:run", "workflows:read"])
    frames = await _streamed_run(hub, workflow, key, {"idempotency-key": "watched"})
    started = frames[0][1]
    assert frames[0][0] == "started" and started["execution_id"] != other
    assert {data["execution"]["execution_id"] for _, data in frames[1:]} == {started["execution_id"]}
    assert [name for name, _ in frames][1] == "execution.started" and frames[-1][0] == "execution.completed"
    assert frames[-1][1]["execution"]["output"] == 3
    # A retry of the run that has ended: nothing more will happen, so the stream says how it ended, and ends.
    replayed = await _streamed_run(hub, workflow, key, {"idempotency-key": "watched"})
    assert [name for name, _ in replayed] == ["started", "finished"] and replayed[0][1] == started
    assert (replayed[1][1]["status"], replayed[1][1]["output"]) == ("completed", 3)
    refused = await hub.http.post(f"/api/workflows/{workflow['workflow_id']}/runs?stream=true", json={"input": 5},
                                  headers={"authorization": f"Bearer {alice.access_token}"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_request"
