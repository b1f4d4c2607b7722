"""Events: the hub-wide cursor, `events.list`, and live `events.subscribe` streams over the WebSocket.

The stream's promise is that every event after the cursor it was started with arrives exactly once,
in order, across the replay-to-live switch, reconnects, concurrent writers, and a disconnect for
falling behind.
"""

import json
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack, aclosing
from typing import Any

import anyio
import pytest

from bridges.client._websocket import ConnectionClosed

from .client import Agent, HubClient, RpcSocket
from .messaging import EventSocket, all_events, event_socket, group, head, raises_code, send, timeline
from .servers import HubServer, drop_postgres_database, make_server
from .sse_client import open_sse


def _key(event: dict[str, Any]) -> tuple[int, str, str | None]:
    return event["cursor"], event["type"], event["message"]["message_id"] if event["message"] else None


async def test_every_visible_change_is_an_event_with_an_increasing_cursor(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    carol = await hub.register("carol")
    conversation_id = await group(hub, alice, bob)
    sent = await send(hub, bob, conversation_id, "hello")
    await hub.call("messages.edit", {"message_id": sent["message_id"], "body": "hello!"}, token=bob.access_token)
    await hub.call("messages.mark_read", {"conversation_id": conversation_id, "seq": 2}, token=alice.access_token)
    await hub.call("conversations.update", {"conversation_id": conversation_id, "topic": "t"}, token=alice.access_token)
    await hub.call("conversations.add_members", {"conversation_id": conversation_id, "agents": [carol.agent_id]},
                   token=alice.access_token)
    await hub.call("conversations.set_role", {"conversation_id": conversation_id, "agent_id": carol.agent_id,
                                              "role": "admin"}, token=alice.access_token)
    await hub.call("conversations.remove_member", {"conversation_id": conversation_id, "agent_id": carol.agent_id},
                   token=alice.access_token)
    await hub.call("messages.delete", {"message_id": sent["message_id"]}, token=alice.access_token)
    await hub.call("conversations.leave", {"conversation_id": conversation_id}, token=alice.access_token)
    events = await all_events(hub, bob)
    assert [e["type"] for e in events] == [
        "conversation.created", "message.created", "message.edited", "read.updated", "conversation.updated",
        "members.added", "member.role_changed", "member.removed", "message.deleted", "member.left",
        "member.role_changed",  # the last owner left: bob inherits the group
    ]
    cursors = [e["cursor"] for e in events]
    assert cursors == sorted(set(cursors))
    assert all(e["conversation_id"] == conversation_id for e in events)
    assert events[3]["read"] == {"agent_id": alice.agent_id, "last_read_seq": 2}
    assert events[-1]["message"]["system"]["agent_ids"] == [bob.agent_id] and events[-1]["actor_id"] == alice.agent_id
    carol_events = await all_events(hub, carol)
    assert [e["type"] for e in carol_events] == ["members.added", "member.role_changed", "member.removed"]


async def test_events_list_pages_through_each_event_exactly_once(hub: HubClient, alice: Agent, bob: Agent) -> None:
    conversation_id = await group(hub, alice, bob)
    for i in range(9):
        await send(hub, alice, conversation_id, f"m{i}")
    everything = await all_events(hub, bob)
    paged: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await hub.call("events.list", {"after": after, "limit": 4}, token=bob.access_token)
        assert len(page["items"]) <= 4
        paged += page["items"]
        after = page["next_cursor"]
        if not page["has_more"]:
            break
    assert paged == everything and len(everything) == 10
    last = await hub.call("events.list", {"after": after}, token=bob.access_token)
    assert last == {"items": [], "next_cursor": after, "has_more": False}


async def test_a_bad_cursor_is_refused(hub: HubClient, alice: Agent) -> None:
    beyond = await head(hub, alice) + 10**9
    for params in [{"after": beyond}, {"after": -1}, {"after": "abc"}, {"limit": 0}, {"limit": 201}, {"timeout": 31},
                   {"since": 0}]:
        with raises_code("invalid_request"):
            await hub.call("events.list", params, token=alice.access_token)
    async with await RpcSocket.open(hub.server, alice.access_token) as ws:
        for params in [{"after": beyond}, {"after": -5}, {"after": "x"}, {"cursor": 1}]:
            with raises_code("invalid_request"):
                await ws.call("events.subscribe", params)
        assert (await ws.call("events.subscribe", {"after": 0}))["after"] == 0


async def test_events_list_can_wait_for_the_next_event(hub: HubClient, alice: Agent, bob: Agent) -> None:
    conversation_id = await group(hub, alice, bob)
    cursor = await head(hub, bob)
    assert (await hub.call("events.list", {"after": cursor, "timeout": 0.05}, token=bob.access_token))["items"] == []
    result: dict[str, Any] = {}

    async def poll() -> None:
        result.update(await hub.call("events.list", {"after": cursor, "timeout": 20}, token=bob.access_token))

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(poll)
            await send(hub, alice, conversation_id, "wake up")
    assert [e["message"]["body"] for e in result["items"]] == ["wake up"]


# -- live streams ---------------------------------------------------------------------------------


async def test_subscribe_replays_after_the_cursor_then_goes_live(hub: HubClient, alice: Agent, bob: Agent) -> None:
    conversation_id = await group(hub, alice, bob)
    start = await head(hub, bob)
    for i in range(3):
        await send(hub, alice, conversation_id, f"missed {i}")
    async with event_socket(hub.server, bob, after=start) as stream:
        replayed = await stream.take(3)
        await send(hub, alice, conversation_id, "live")
        live = await stream.next()
    assert [e["message"]["body"] for e in replayed + [live]] == ["missed 0", "missed 1", "missed 2", "live"]
    assert [_key(e) for e in replayed + [live]] == [_key(e) for e in await all_events(hub, bob, after=start)]


async def test_subscribe_without_a_cursor_starts_live_from_now(hub: HubClient, alice: Agent, bob: Agent) -> None:
    conversation_id = await group(hub, alice, bob)
    await send(hub, alice, conversation_id, "old news")
    async with event_socket(hub.server, bob, after=None) as stream:
        assert stream.start == await head(hub, bob)
        await send(hub, alice, conversation_id, "fresh")
        assert (await stream.next())["message"]["body"] == "fresh"


async def test_one_stream_per_connection(hub: HubClient, alice: Agent) -> None:
    async with event_socket(hub.server, alice, after=None) as stream:
        with raises_code("conflict"):
            await stream.ws.call("events.subscribe", {})


async def test_a_stream_needs_the_messages_read_scope(hub: HubClient, alice: Agent) -> None:
    key = await hub.api_key(alice, scopes=["agents:read"])
    async with await RpcSocket.open(hub.server, key) as ws:
        with raises_code("forbidden"):
            await ws.call("events.subscribe", {})


async def test_resuming_from_the_last_cursor_after_a_disconnect_loses_and_repeats_nothing(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    conversation_id = await group(hub, alice, bob)
    start = await head(hub, bob)
    for i in range(4):
        await send(hub, alice, conversation_id, f"a{i}")
    async with event_socket(hub.server, bob, after=start) as stream:
        first = await stream.take(2)  # and then the connection drops, two events unread
    for i in range(3):
        await send(hub, alice, conversation_id, f"b{i}")
    async with event_socket(hub.server, bob, after=first[-1]["cursor"]) as stream:
        rest = await stream.take(5)
        await send(hub, alice, conversation_id, "c")
        rest.append(await stream.next())
    seen = [e["message"]["body"] for e in first + rest]
    assert seen == ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "c"]
    assert [_key(e) for e in first + rest] == [_key(e) for e in await all_events(hub, bob, after=start)]


async def test_the_replay_to_live_switch_under_concurrent_writes_has_no_gap_and_no_duplicate(
    hub: HubClient, alice: Agent, bob: Agent
) -> None:
    conversation_id = await group(hub, alice, bob)
    start = await head(hub, bob)
    total = 60
    some_sent = anyio.Event()

    async def writer() -> None:
        for i in range(total):
            await send(hub, alice, conversation_id, f"m{i}")
            if i == 10:
                some_sent.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        await some_sent.wait()
        # Subscribed while alice keeps writing: part replay, part buffer, part live.
        async with event_socket(hub.server, bob, after=start) as stream:
            received = await stream.take(total)
    assert [e["message"]["body"] for e in received] == [f"m{i}" for i in range(total)]
    assert [_key(e) for e in received] == [_key(e) for e in await all_events(hub, bob, after=start)]


async def test_concurrent_senders_in_one_group_see_gapless_seqs_and_identical_streams(hub: HubClient) -> None:
    """Property: N agents each send M messages at once, over their WebSocket and over HTTP.

    Every member's timeline is seq 1..K without a gap, every acknowledged message is in it exactly
    once, and every member's live stream is the same sequence of events, equal to `events.list`.
    """
    agents = [await hub.register(f"peer{i}") for i in range(5)]
    per_transport = 8
    conversation_id = await group(hub, agents[0], *agents[1:])
    starts = {agent.agent_id: await head(hub, agent) for agent in agents}
    acked: list[dict[str, Any]] = []
    async with AsyncExitStack() as stack:
        streams: dict[str, EventSocket] = {
            agent.agent_id: await stack.enter_async_context(event_socket(hub.server, agent, starts[agent.agent_id]))
            for agent in agents
        }

        async def over_websocket(agent: Agent) -> None:
            for i in range(per_transport):
                acked.append(await streams[agent.agent_id].ws.call(
                    "messages.send", {"conversation_id": conversation_id, "body": f"{agent.handle} ws {i}"}))

        async def over_http(agent: Agent) -> None:
            for i in range(per_transport):
                acked.append(await send(hub, agent, conversation_id, f"{agent.handle} http {i}",
                                        client_msg_id=f"http-{i}"))

        async with anyio.create_task_group() as tg:
            for agent in agents:
                tg.start_soon(over_websocket, agent)
                tg.start_soon(over_http, agent)
        total = len(agents) * per_transport * 2
        received = {agent_id: await stream.take(total) for agent_id, stream in streams.items()}

    acked_ids = {m["message_id"] for m in acked}
    assert len(acked_ids) == total
    for agent in agents:
        listed = await timeline(hub, agent, conversation_id, page=37)
        assert [m["seq"] for m in listed] == list(range(1, total + 2))
        assert Counter(m["message_id"] for m in listed[1:]) == Counter(acked_ids)
        assert {m["message_id"]: m["seq"] for m in acked} == {m["message_id"]: m["seq"] for m in listed[1:]}
    streams_seen = [[_key(e) for e in events] for events in received.values()]
    assert all(seen == streams_seen[0] for seen in streams_seen)
    assert {message_id for _, _, message_id in streams_seen[0]} == acked_ids
    first_events = next(iter(received.values()))
    assert [e["message"]["seq"] for e in first_events] == list(range(2, total + 2))  # commit order is seq order
    for agent in agents:
        assert [_key(e) for e in await all_events(hub, agent, after=starts[agent.agent_id])] == streams_seen[0]


LAGGING_MESSAGES = 30
BIG_BODY = "x" * 900_000


@pytest.fixture(scope="module")
def laggy_server(tmp_path_factory: pytest.TempPathFactory, anyio_backend: str, store_kind: str) -> Iterator[HubServer]:
    """A hub whose live subscribers may fall only 4 events behind, and whose messages may be 1 MB: a
    reader that stops reading falls behind after a few messages."""
    server = make_server(anyio_backend, store_kind, tmp_path_factory.mktemp(f"laggy-{anyio_backend}-{store_kind}"),
                         event_buffer="4", max_message_bytes="1000000")
    server.launch()
    yield server
    assert server.stop() == 0, server.log()
    if server.database_url:
        drop_postgres_database(server.database_url)


async def test_a_subscriber_that_falls_behind_is_disconnected_and_resumes_without_loss(
    laggy_server: HubServer,
) -> None:
    messages = LAGGING_MESSAGES
    server = laggy_server
    async with HubClient(server) as hub:
        alice, bob = await hub.register("alice"), await hub.register("bob")
        conversation_id = await group(hub, alice, bob)
        start = await head(hub, bob)
        sent = []
        async with event_socket(server, bob, after=start) as slow:
            # bob reads nothing while ~27 MB of events pile up: more than the sockets between them buffer.
            for i in range(messages):
                sent.append((await send(hub, alice, conversation_id, f"{i:04d}" + BIG_BODY))["message_id"])
            delivered, closed = await slow.closed()
        assert closed.code == 1013
        match = re.search(r"cursor (\d+)", closed.reason)
        assert match is not None, closed.reason
        resume = int(match.group(1))
        assert resume == (delivered[-1]["cursor"] if delivered else start)
        assert len(delivered) < messages
        async with event_socket(server, bob, after=resume) as fresh:
            rest = await fresh.take(messages - len(delivered))
        assert [e["message"]["message_id"] for e in delivered + rest] == sent


async def test_an_sse_reader_that_falls_behind_gets_lagged_with_its_resume_cursor_and_resumes_without_loss(
    laggy_server: HubServer,
) -> None:
    server = laggy_server
    async with HubClient(server) as hub:
        alice, bob = await hub.register("alice"), await hub.register("bob")
        conversation_id = await group(hub, alice, bob)
        start = await head(hub, bob)
        auth = {"authorization": f"Bearer {bob.access_token}"}
        sent, delivered, lagged = [], [], None
        with anyio.fail_after(60):
            async with open_sse(server.url, "/api/events/stream", {**auth, "last-event-id": str(start)}) as stream:
                for i in range(LAGGING_MESSAGES):  # bob reads nothing meanwhile
                    sent.append((await send(hub, alice, conversation_id, f"{i:04d}" + BIG_BODY))["message_id"])
                async with aclosing(stream.messages()) as frames:
                    async for frame in frames:
                        if frame.get("event") == "lagged":
                            lagged = json.loads(frame["data"])
                        elif "id" in frame:
                            delivered.append(json.loads(frame["data"]))
        assert lagged is not None, "the stream ended without saying it lagged"
        assert lagged["resume_after"] == (delivered[-1]["cursor"] if delivered else start)
        assert len(delivered) < LAGGING_MESSAGES
        rest = await all_events(hub, bob, after=lagged["resume_after"])
        assert [e["message"]["message_id"] for e in delivered + rest] == sent



async def test_a_suspension_closes_an_open_event_subscription(hub: HubClient) -> None:
    alice = await hub.register("susp-a")
    bob = await hub.register("susp-b")
    async with await RpcSocket.open(hub.server, bob.access_token) as ws:
        await ws.call("events.subscribe", {})
        await hub.call("admin.agents.suspend", {"agent": bob.agent_id}, token=hub.admin_key)
        await hub.call("messages.send", {"to": bob.handle, "body": "hidden"}, token=alice.access_token)
        with anyio.fail_after(20), pytest.raises(ConnectionClosed) as closed:
            await ws.receive()
    assert closed.value.code == 4401
    assert not [n for n in ws.notifications if n.get("method") == "event"]
