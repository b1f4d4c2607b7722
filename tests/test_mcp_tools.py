"""The MCP tools and resources, driven by the SDK's own `mcp.Client` against servers in this process.

Each agent gets its own server over one hub in this process (the caller of a stdio or in-process
server is its credential). Every test runs on both protocol eras, both event loops and both stores.
"""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_args

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from bridges.mcp_stdio import PROFILES
from hub.config import Settings
from hub.operations import OPERATIONS
from mcp_tools.access import Access, InProcessLink, fixed_credential
from mcp_tools.profiles import TOOLSETS, Profile
from mcp_tools.push import touched
from mcp_tools.server import build_server
from mcp_tools.tools.schemas import compact_schema

from .client import HubClient
from .inprocess import LocalHub, local_hub
from .mcp_support import (
    ERA,
    SDK_CLIENT_TRIO_GET_STREAM,
    WAIT,
    HttpTools,
    InProcessTools,
    ToolHub,
    Updates,
    call,
    call_error,
    mode,
    subscribe,
    unsubscribe,
)

__all__ = ["mode"]  # the fixture, imported for its parametrization
pytestmark = [pytest.mark.anyio, SDK_CLIENT_TRIO_GET_STREAM]

TOOLS_LIST_BUDGET = 12_000
MEMORY_TOOLS_BUDGET = 4_000
MEMORY_TOOLS = {"remember", "recall", "update_memory", "forget"}
RAG_TOOLS_BUDGET = 3_000
RAG_TOOLS = {"search_documents", "add_document", "document_status"}
WORKFLOW_TOOLS_BUDGET = 4_000
WORKFLOW_TOOLS = {"list_workflows", "run_workflow", "workflow_status", "respond_to_workflow"}
MESSAGING_TOOLS = {
    "whoami", "find_agents", "get_agent", "update_profile", "inbox", "read_messages", "send_message", "edit_message",
    "delete_message", "wait_for_messages", "create_group", "manage_group", "block", "unblock", "list_blocks",
}


@pytest.fixture
async def local(tmp_path: Path, store_kind: str) -> AsyncIterator[LocalHub]:
    async with local_hub(tmp_path, store_kind) as hub:
        yield hub


@pytest.fixture(params=["in_process", "http"])
async def tools(request: pytest.FixtureRequest, tmp_path: Path, store_kind: str) -> AsyncIterator[ToolHub]:
    """The tools over the SDK's memory transport on a hub in this process, and over a real hub's `/mcp`."""
    if request.param == "http":
        server = request.getfixturevalue("hub_server")
        async with HubClient(server) as hub:
            yield HttpTools(server, hub)
    else:
        async with local_hub(tmp_path, store_kind) as hub:
            yield InProcessTools(hub)


def offline_server(profile: Profile) -> Any:
    """A server whose tools are never called: for what tools/list shows."""
    return build_server(Access(InProcessLink(None), fixed_credential("unused")), profile)


# -- what is listed ----------------------------------------------------------------------------------------


async def test_the_messaging_profile_lists_its_tools_within_the_size_budget(mode: str) -> None:
    async with Client(offline_server(Profile.MESSAGING), mode=mode) as client:
        assert client.protocol_version == ERA[mode]
        listed = await client.session.list_tools()
    size = len(listed.model_dump_json(by_alias=True, exclude_none=True))
    assert size <= TOOLS_LIST_BUDGET, f"tools/list of the messaging profile is {size} characters"
    assert {tool.name for tool in listed.tools} == MESSAGING_TOOLS
    for tool in listed.tools:
        assert tool.description and tool.title, tool.name
        assert tool.input_schema["type"] == "object" and tool.output_schema is not None, tool.name
        assert tool.annotations is not None, tool.name


@pytest.mark.parametrize(("profile", "tools", "budget"), [
    (Profile.MEMORY, MEMORY_TOOLS, MEMORY_TOOLS_BUDGET),
    (Profile.RAG, RAG_TOOLS, RAG_TOOLS_BUDGET),
    (Profile.WORKFLOWS, WORKFLOW_TOOLS, WORKFLOW_TOOLS_BUDGET),
], ids=lambda value: value.value if isinstance(value, Profile) else "")
async def test_a_small_profile_lists_just_its_tools_within_its_budget(
    mode: str, profile: Profile, tools: set[str], budget: int
) -> None:
    async with Client(offline_server(profile), mode=mode) as client:
        listed = await client.session.list_tools()
    size = len(listed.model_dump_json(by_alias=True, exclude_none=True))
    assert size <= budget, f"tools/list of the {profile.value} profile is {size} characters"
    assert {tool.name for tool in listed.tools} == tools
    assert all(tool.output_schema is not None and tool.annotations is not None for tool in listed.tools)


async def test_tool_annotations_follow_the_flags_of_the_operations_they_call() -> None:
    async with Client(offline_server(Profile.ALL), mode="legacy") as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    for definition in TOOLSETS[Profile.MESSAGING]:
        annotations = listed[definition.name].annotations
        assert annotations is not None
        ops = [OPERATIONS[name] for name in definition.operations]
        if all(op.read_only for op in ops):
            assert annotations.read_only_hint is True, definition.name
            continue
        assert not annotations.read_only_hint, definition.name
        assert annotations.destructive_hint is any(op.destructive for op in ops), definition.name
        assert annotations.idempotent_hint is all(op.idempotent for op in ops), definition.name
    assert listed["inbox"].annotations.read_only_hint is True  # type: ignore[union-attr]
    assert listed["delete_message"].annotations.destructive_hint is True  # type: ignore[union-attr]
    assert listed["send_message"].annotations.destructive_hint is False  # type: ignore[union-attr]


@pytest.mark.parametrize("profile", list(Profile))
async def test_a_profile_lists_exactly_its_toolsets(profile: Profile) -> None:
    async with Client(offline_server(profile), mode="legacy") as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
    if profile is Profile.ALL:
        expected = [t.name for toolset in TOOLSETS.values() for t in toolset]
    else:
        expected = [t.name for t in TOOLSETS[profile]]
    assert names == expected


def test_every_place_that_names_profiles_names_the_same_ones() -> None:
    names = tuple(profile.value for profile in Profile)
    assert PROFILES == names  # `parley mcp --tools`
    assert get_args(Settings.model_fields["mcp_tools"].annotation) == names  # PARLEY_MCP_TOOLS for /mcp


def test_compact_schemas_drop_titles_and_null_branches_and_inline_definitions() -> None:
    schema = {
        "title": "X", "type": "object", "required": ["title"],
        "properties": {
            "title": {"title": "Title", "type": "string"},
            "cursor": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "title": "Cursor"},
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
        },
        "$defs": {"Item": {"title": "Item", "type": "object", "properties": {"n": {"type": "integer", "title": "N"}}}},
    }
    assert compact_schema(schema) == {
        "type": "object", "required": ["title"],
        "properties": {
            "title": {"type": "string"},
            "cursor": {"type": "string"},
            "items": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        },
    }


# -- every tool ---------------------------------------------------------------------------------------------


async def test_messaging_tools_from_profile_to_reply(tools: ToolHub, mode: str) -> None:
    alice, bob = await tools.agent("alice"), await tools.agent("bob")
    async with tools.client(alice.access_token, mode) as a, tools.client(bob.access_token, mode) as b:
        me = await call(a, "whoami")
        assert (me["agent_id"], me["handle"]) == (alice.agent_id, alice.handle)
        assert "messages:write" in me["scopes"]

        tag = f"papers-{alice.agent_id[-8:]}"  # the hub may be shared with other tests
        profile = await call(a, "update_profile", name="Alice", about="I summarise papers.", tags=[tag])
        assert (profile["name"], profile["tags"], profile["visibility"]) == ("Alice", [tag], "public")
        found = await call(b, "find_agents", tag=tag)
        assert [agent["handle"] for agent in found["agents"]] == [alice.handle]
        assert (await call(b, "get_agent", agent=alice.handle))["about"] == "I summarise papers."

        sent = await call(a, "send_message", to=bob.handle, text="hello bob", client_msg_id="c-1")
        again = await call(a, "send_message", to=bob.handle, text="hello bob", client_msg_id="c-1")
        assert again["message_id"] == sent["message_id"]

        inbox = await call(b, "inbox")
        line = inbox["conversations"][0]
        assert (line["conversation_id"], line["kind"], line["name"], line["unread"]) == (
            sent["conversation_id"], "direct", alice.handle, 1)
        assert line["last"] == f"{alice.handle}: hello bob"

        read = await call(b, "read_messages", agent=alice.handle, mark_read=True)
        assert [m["text"] for m in read["messages"] if "text" in m] == ["hello bob"]
        assert read["messages"][-1]["sender"] == alice.handle and read["unread"] == 0
        assert (await call(b, "read_messages", conversation=sent["conversation_id"]))["messages"] == []
        newest = await call(b, "read_messages", conversation=sent["conversation_id"], unread_only=False, limit=1)
        assert [m["id"] for m in newest["messages"]] == [sent["message_id"]] and newest["more"] is True

        reply = await call(b, "send_message", conversation=sent["conversation_id"], text="hi alice",
                           reply_to=sent["message_id"], format="markdown")
        edited = await call(b, "edit_message", message_id=reply["message_id"], text="hi *alice*")
        assert edited["revision"] == 1
        thread = await call(a, "read_messages", conversation=sent["conversation_id"])
        last = thread["messages"][-1]
        assert (last["text"], last["type"], last["reply_to"], last["edited"]) == (
            "hi *alice*", "markdown", sent["message_id"], True)
        assert (await call(b, "delete_message", message_id=reply["message_id"]))["deleted"] is True
        tombstone = (await call(a, "read_messages", conversation=sent["conversation_id"], unread_only=False))
        assert tombstone["messages"][-1]["deleted"] is True and "text" not in tombstone["messages"][-1]


async def test_group_tools_create_add_remove_rename_and_leave(tools: ToolHub, mode: str) -> None:
    alice, bob, carol = await tools.agent("alice"), await tools.agent("bob"), await tools.agent("carol")
    async with tools.client(alice.access_token, mode) as a, tools.client(bob.access_token, mode) as b:
        group = await call(a, "create_group", title="Papers", members=[bob.handle], topic="weekly reading")
        gid = group["conversation_id"]
        assert (group["title"], group["topic"]) == ("Papers", "weekly reading")
        assert group["members"] == [f"{alice.handle} (owner)", bob.handle]

        added = await call(a, "manage_group", conversation=gid, action="add", agents=[carol.handle])
        assert carol.handle in added["members"]
        removed = await call(a, "manage_group", conversation=gid, action="remove", agents=[carol.handle])
        assert carol.handle not in removed["members"]
        renamed = await call(a, "manage_group", conversation=gid, action="rename", title="Reading group")
        assert renamed["title"] == "Reading group"
        assert await call_error(b, "manage_group", conversation=gid, action="remove", agents=[alice.handle]) == (
            "forbidden")
        assert await call_error(a, "manage_group", conversation=gid, action="add") == "invalid_request"
        assert (await call(b, "manage_group", conversation=gid, action="leave"))["left"] is True
        assert await call_error(b, "read_messages", conversation=gid) == "not_found"

        events = [m.get("event") for m in (await call(a, "read_messages", conversation=gid, unread_only=False,
                                                      limit=100))["messages"]]
        assert f"added {carol.handle}" in events and f"removed {carol.handle}" in events
        assert "renamed it to 'Reading group'" in events and "left" in events


async def test_block_tools_block_list_and_unblock(tools: ToolHub, mode: str) -> None:
    alice, bob = await tools.agent("alice"), await tools.agent("bob")
    async with tools.client(alice.access_token, mode) as a, tools.client(bob.access_token, mode) as b:
        await call(b, "send_message", to=alice.handle, text="spam")
        blocked = await call(a, "block", agent=bob.handle)
        assert blocked["agent"] == bob.handle
        assert await call_error(b, "send_message", to=alice.handle, text="more spam") == "blocked"
        listed = await call(a, "list_blocks")
        assert [(x["block_id"], x["agent"]) for x in listed["blocks"]] == [(blocked["block_id"], bob.handle)]
        assert (await call(a, "unblock", agent=bob.handle))["block_id"] == blocked["block_id"]
        assert (await call(a, "list_blocks"))["blocks"] == []
        assert await call_error(a, "unblock", agent=bob.handle) == "not_found"
        await call(b, "send_message", to=alice.handle, text="sorry")

        conversation = (await call(a, "inbox"))["conversations"][0]["conversation_id"]
        by_conversation = await call(a, "block", conversation=conversation)
        assert by_conversation["conversation_id"] == conversation
        assert (await call(a, "inbox"))["conversations"][0]["blocked"] is True
        assert (await call(a, "unblock", block_id=by_conversation["block_id"]))["conversation_id"] == conversation


async def test_memory_tools_remember_recall_update_and_forget(tools: ToolHub, mode: str) -> None:
    alice, bob = await tools.agent("alice"), await tools.agent("bob")
    async with tools.client(alice.access_token, mode) as a, tools.client(bob.access_token, mode) as b:
        kept = await call(a, "remember", content="The quarterly report is due on the 14th.", category="task",
                          importance=4)
        assert kept["version"] == 1 and "duplicate" not in kept
        again = await call(a, "remember", content="the quarterly report is due on the 14th.")
        assert again == {"memory_id": kept["memory_id"], "version": 1, "duplicate": True}
        await call(a, "remember", content="Lunch with Dana on Friday.", category="note")

        found = await call(a, "recall", query="when is the report due?", limit=1)
        assert [(m["id"], m["category"]) for m in found["memories"]] == [(kept["memory_id"], "task")]
        assert (await call(b, "recall", query="quarterly report"))["memories"] == []  # private to alice

        changed = await call(a, "update_memory", memory_id=kept["memory_id"], content="The report is due on the 21st.",
                             pinned=True)
        assert changed == {"memory_id": kept["memory_id"], "version": 2}
        pinned = json.loads((await a.read_resource("parley://memories/pinned")).contents[0].text)  # type: ignore[union-attr]
        assert [m["content"] for m in pinned["memories"]] == ["The report is due on the 21st."]
        history = await tools.as_agent(alice, "memories.history", {"memory_id": kept["memory_id"]})
        assert [v["content"] for v in history["items"]][-1] == "The quarterly report is due on the 14th."

        forgotten = await call(a, "forget", memory_id=kept["memory_id"])
        assert forgotten["archived"] is True
        assert kept["memory_id"] not in [m["id"] for m in (await call(a, "recall", query="report due"))["memories"]]
        assert (await call(a, "forget", memory_id=kept["memory_id"], undo=True))["archived"] is False
        assert await call_error(b, "forget", memory_id=kept["memory_id"]) == "not_found"
        assert await call_error(a, "remember", content="x" * (9 * 1024)) == "payload_too_large"

        group = await call(a, "create_group", title="Shared", members=[bob.handle])
        shared = await call(a, "remember", content="Deploys happen on Thursdays.",
                            conversation=group["conversation_id"])
        seen = await call(b, "recall", query="when do deploys happen", conversation=group["conversation_id"])
        assert [(m["id"], m["shared"]) for m in seen["memories"]] == [(shared["memory_id"], True)]


async def test_document_tools_add_watch_and_search_with_citations(tools: ToolHub, mode: str) -> None:
    alice, bob = await tools.agent("alice"), await tools.agent("bob")
    async with tools.client(alice.access_token, mode) as a, tools.client(bob.access_token, mode) as b:
        text = "The office moves to Leeds in March.\n\nParking permits are issued by Facilities."
        added = await call(a, "add_document", title="Office notes", text=text)
        assert (added["title"], added["state"]) == ("Office notes", "queued")
        with anyio.fail_after(WAIT):
            while (status := await call(a, "document_status"))["state"] == "in_progress":
                await anyio.sleep(0.05)
        assert (status["state"], status["percent"], status["processed"]) == ("completed", 100.0, 1)
        found = await call(a, "search_documents", query="where does the office move?", limit=3)
        best = found["passages"][0]
        assert (best["document_id"], best["title"], best.get("page")) == (added["document_id"], "Office notes", None)
        start, end = map(int, best["chars"].split("-"))
        assert text[start:end] == best["text"] and "Leeds" in best["text"]
        resource = (await a.read_resource(f"parley://documents/{added['document_id']}")).contents[0]
        assert "Leeds" in resource.text and resource.text.startswith("# Office notes")  # type: ignore[union-attr]
        assert (await call(b, "search_documents", query="office Leeds"))["passages"] == []  # alice's store
        assert await call_error(b, "add_document", title="x", text="y", conversation="cnv_missing") == "not_found"
        assert await call_error(a, "add_document", title="neither text nor file") == "invalid_request"


async def test_workflow_tools_run_watch_and_answer(tools: ToolHub, mode: str) -> None:
    alice, bob = await tools.agent("alice"), await tools.agent("bob")
    quick = await tools.as_agent(alice, "workflows.create", {"name": "Double", "nodes": [
        {"id": "double", "type": "transform", "value": "{{ input.n * 2 }}"}]})
    gated = await tools.as_agent(alice, "workflows.create", {"name": "Gate", "nodes": [
        {"id": "gate", "type": "approval", "approver": bob.handle, "prompt": "Deploy {{ input.what }}?"}]})
    async with tools.client(alice.access_token, mode) as a, tools.client(bob.access_token, mode) as b:
        listed = await call(a, "list_workflows")
        assert [w["name"] for w in listed["workflows"]] == ["Gate", "Double"]
        done = await call(a, "run_workflow", workflow_id=quick["workflow_id"], input={"n": 21})
        assert (done["status"], done["output"]) == ("completed", 42)
        pending = await call(a, "run_workflow", workflow_id=gated["workflow_id"], input={"what": "v2"}, wait_seconds=0)
        with anyio.fail_after(WAIT):
            while not (asked := await call(b, "workflow_status"))["requests"]:
                await anyio.sleep(0.05)
        assert asked["requests"][0]["prompt"] == "Deploy v2?"
        answer = await call(b, "respond_to_workflow", execution_id=pending["execution_id"], node_id="gate",
                            approve=True)
        assert answer["answered"] == "approved"
        with anyio.fail_after(WAIT):
            while (status := (await call(a, "workflow_status", execution_id=pending["execution_id"]))["run"])[
                    "status"] != "completed":
                await anyio.sleep(0.05)
        assert status["output"]["approved"] is True and status["steps"] == [{"id": "gate", "status": "completed"}]
        assert await call_error(b, "workflow_status", execution_id=pending["execution_id"]) == "not_found"


# -- errors ------------------------------------------------------------------------------------------------


async def test_failures_come_back_as_error_results_with_the_hubs_code(tools: ToolHub, mode: str) -> None:
    alice, bob = await tools.agent("alice"), await tools.agent("bob")
    async with tools.client(alice.access_token, mode) as a, tools.client(bob.access_token, mode) as b:
        sent = await call(a, "send_message", to=bob.handle, text="mine")
        assert await call_error(b, "edit_message", message_id=sent["message_id"], text="theirs") == "forbidden"
        assert await call_error(a, "read_messages", conversation="cnv_missing") == "not_found"
        assert await call_error(a, "get_agent", agent="nobody-" + "x" * 10) == "not_found"
        stranger = await tools.agent("stranger")  # exists, but no conversation with alice yet
        assert await call_error(a, "read_messages", agent=stranger.handle) == "not_found"
        assert await call_error(a, "send_message", text="to nobody") == "invalid_request"
        assert await call_error(a, "read_messages", conversation=5) == "invalid_request"  # a wrong argument type
        assert await call_error(a, "send_message", to=bob.handle, text="x", format="yaml") == "invalid_request"
        assert await call_error(a, "send_message", to=bob.handle, text="   ") == "invalid_request"  # a blank body


async def test_a_revoked_key_stops_working_at_the_next_call(tools: ToolHub, mode: str) -> None:
    alice = await tools.agent("alice")
    key, key_id = await tools.api_key(alice)
    async with tools.client(key, mode) as client:
        assert (await call(client, "whoami"))["agent_id"] == alice.agent_id
        await tools.as_agent(alice, "keys.revoke", {"key_id": key_id})
        for tool in ("whoami", "inbox"):
            if isinstance(tools, HttpTools):  # refused by `/mcp` itself: HTTP 401, before any tool runs
                with pytest.raises(MCPError):
                    await client.call_tool(tool, {})
                refused = await tools.hub.http.post("/mcp", headers={"authorization": f"Bearer {key}"}, json={})
                assert refused.status_code == 401 and "invalid_token" in refused.headers["www-authenticate"]
            else:
                assert await call_error(client, tool) == "unauthorized"


# -- resources ---------------------------------------------------------------------------------------------


async def test_resources_show_the_callers_inbox_conversations_and_profiles(tools: ToolHub, mode: str) -> None:
    alice, bob = await tools.agent("alice"), await tools.agent("bob")
    async with tools.client(alice.access_token, mode) as a, tools.client(bob.access_token, mode) as b:
        listed = await a.list_resources()
        assert [str(r.uri) for r in listed.resources] == ["parley://inbox", "parley://memories/pinned"]
        templates = {t.uri_template for t in (await a.list_resource_templates()).resource_templates}
        assert templates == {"parley://conversations/{conversation_id}", "parley://agents/{handle}",
                         "parley://documents/{document_id}"}

        sent = await call(a, "send_message", to=bob.handle, text="resource me")
        inbox = json.loads((await b.read_resource("parley://inbox")).contents[0].text)  # type: ignore[union-attr]
        assert inbox["conversations"][0]["unread"] == 1
        thread = json.loads(
            (await b.read_resource(f"parley://conversations/{sent['conversation_id']}")).contents[0].text  # type: ignore[union-attr]
        )
        assert thread["messages"][-1]["text"] == "resource me"
        profile = json.loads((await b.read_resource(f"parley://agents/{alice.handle}")).contents[0].text)  # type: ignore[union-attr]
        assert profile["agent_id"] == alice.agent_id

        with pytest.raises(MCPError) as missing:
            await b.read_resource("parley://conversations/cnv_missing")
        assert missing.value.error.data["code"] == "not_found"  # type: ignore[index]


# -- push and waiting --------------------------------------------------------------------------------------


async def test_a_new_message_updates_the_recipients_subscribed_resources(tools: ToolHub, mode: str) -> None:
    alice, bob = await tools.agent("alice"), await tools.agent("bob")
    updates = Updates()
    async with tools.client(alice.access_token, mode, message_handler=updates) as a, \
            tools.client(bob.access_token, mode) as b:
        first = await call(b, "send_message", to=alice.handle, text="first")
        conversation = f"parley://conversations/{first['conversation_id']}"
        if mode == "legacy":
            await subscribe(a, "parley://inbox")
            await subscribe(a, conversation)
            await call(b, "send_message", to=alice.handle, text="second")
            await updates.until(conversation)
            await updates.until("parley://inbox")
            await unsubscribe(a, conversation)
            await unsubscribe(a, "parley://inbox")
        else:
            async with a.listen(resource_subscriptions=["parley://inbox", conversation]) as stream:
                await call(b, "send_message", to=alice.handle, text="second")
                seen: set[str] = set()
                with anyio.fail_after(WAIT):
                    async for event in stream:
                        seen.add(event.uri)  # type: ignore[union-attr]
                        if seen == {"parley://inbox", conversation}:
                            break
                assert seen == {"parley://inbox", conversation}, "the listen stream ended before the updates"


def test_a_workflows_events_change_no_resource_and_do_not_stop_the_push() -> None:
    # Execution and node events carry no conversation: they once raised in the follower, ending every update.
    workflow_events = [{"type": kind, "conversation_id": None} for kind in
                       ("execution.started", "node.completed", "execution.completed", "workflow.request")]
    assert touched(workflow_events) == set()
    message = {"type": "message.created", "conversation_id": "cnv_1"}
    assert touched([*workflow_events, message]) == {"parley://inbox", "parley://conversations/cnv_1"}


async def test_wait_for_messages_returns_what_another_agent_sends(tools: ToolHub, mode: str) -> None:
    alice, bob = await tools.agent("alice"), await tools.agent("bob")
    async with tools.client(alice.access_token, mode) as a, tools.client(bob.access_token, mode) as b:
        now = await call(a, "wait_for_messages", timeout=0)
        assert now["messages"] == [] and now["timed_out"] is True
        arrived: dict[str, Any] = {}

        async def wait() -> None:
            arrived.update(await call(a, "wait_for_messages", timeout=WAIT, after=now["cursor"]))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            sent = await call(b, "send_message", to=alice.handle, text="are you there?")
        assert arrived["timed_out"] is False
        assert [(m["id"], m["sender"], m["text"], m["conversation_id"]) for m in arrived["messages"]] == [
            (sent["message_id"], bob.handle, "are you there?", sent["conversation_id"])]
        assert arrived["cursor"] > now["cursor"]
        later = await call(a, "wait_for_messages", timeout=0, after=arrived["cursor"])
        assert later["messages"] == []

        group = await call(b, "create_group", title="Invite", members=[alice.handle])
        added = await call(a, "wait_for_messages", timeout=WAIT, after=arrived["cursor"])
        assert added["messages"][0]["conversation_id"] == group["conversation_id"]
        assert added["messages"][0]["event"].startswith("created the conversation")


async def test_cancelling_wait_for_messages_ends_the_wait_in_the_hub(local: LocalHub, mode: str) -> None:
    alice = await local.agent("alice")
    async with InProcessTools(local).client(alice.access_token, mode) as a:
        with anyio.move_on_after(0.5) as scope:  # the client gives up long before the 60 s timeout
            await a.call_tool("wait_for_messages", {"timeout": 60})
        assert scope.cancelled_caught
        with anyio.fail_after(WAIT):
            while local.hub.bus.inner.statistics().subscriptions:  # type: ignore[attr-defined]  # noqa: ASYNC110 - no event to wait on
                await anyio.sleep(0.01)
        assert (await call(a, "whoami"))["handle"] == alice.handle  # the session goes on
