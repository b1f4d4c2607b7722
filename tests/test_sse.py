"""Live events over Server-Sent Events: resumable with Last-Event-ID, exactly once."""

import json
from contextlib import aclosing
from typing import Any

import anyio

from .client import Agent, HubClient
from .conftest import ServerFactory
from .sse_client import open_sse


async def read_events(hub: HubClient, agent: Agent, count: int, headers: dict[str, str] | None = None,
                      params: dict[str, str] | None = None) -> list[dict[str, Any]]:
    events = []
    auth = {"authorization": f"Bearer {agent.access_token}", **(headers or {})}
    with anyio.fail_after(20):
        async with open_sse(hub.server.url, "/api/events/stream", auth, params) as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async with aclosing(response.messages()) as messages:
                async for message in messages:
                    if "id" in message:
                        events.append(message)
                        if len(events) == count:
                            return events
    return events


async def send(hub: HubClient, sender: Agent, to: Agent, body: str) -> dict[str, Any]:
    return await hub.call("messages.send", {"to": to.handle, "body": body}, token=sender.access_token)


async def test_a_dropped_stream_resumes_from_last_event_id_exactly_once(hub: HubClient, alice: Agent,
                                                                         bob: Agent) -> None:
    for i in range(3):
        await send(hub, alice, bob, f"first {i}")
    first = await read_events(hub, bob, 2, params={"after": "0"})
    for i in range(3):
        await send(hub, alice, bob, f"second {i}")
    rest = await read_events(hub, bob, 5, headers={"last-event-id": first[-1]["id"]})
    cursors = [int(e["id"]) for e in first + rest]
    assert cursors == sorted(set(cursors)), "every event once, in order"
    bodies = [json.loads(e["data"])["message"]["body"] for e in first + rest if e["event"] == "message.created"]
    assert bodies == [f"first {i}" for i in range(3)] + [f"second {i}" for i in range(3)]
    assert all(json.loads(e["data"])["cursor"] == int(e["id"]) for e in first + rest)


async def test_a_live_stream_receives_what_is_sent_after_it_opens(hub: HubClient, alice: Agent, bob: Agent) -> None:
    received: list[dict[str, Any]] = []

    async def listen() -> None:
        received.extend(await read_events(hub, bob, 2))

    async with anyio.create_task_group() as tg:
        tg.start_soon(listen)
        with anyio.fail_after(20):
            while not received:
                await send(hub, alice, bob, "are you there?")
                await anyio.sleep(0.2)
                if received:
                    break
    assert {e["event"] for e in received} <= {"conversation.created", "message.created"}


async def test_a_bad_cursor_or_credential_is_an_http_error_before_the_stream(hub: HubClient, bob: Agent) -> None:
    auth = {"authorization": f"Bearer {bob.access_token}"}
    not_a_cursor = await hub.http.get("/api/events/stream", headers={**auth, "last-event-id": "abc"})
    assert not_a_cursor.status_code == 400 and not_a_cursor.json()["error"]["code"] == "invalid_request"
    future = await hub.http.get("/api/events/stream", headers=auth, params={"after": str(10**12)})
    assert future.status_code == 400
    anonymous = await hub.http.get("/api/events/stream")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"


async def test_an_idle_stream_gets_heartbeat_comments(start_hub: ServerFactory) -> None:
    server = start_hub(sse_heartbeat_seconds="0.2")
    async with HubClient(server) as hub:
        agent = await hub.register("quiet")
        with anyio.fail_after(10):
            async with open_sse(server.url, "/api/events/stream",
                                {"authorization": f"Bearer {agent.access_token}"}) as response:
                comments = 0
                async with aclosing(response.messages()) as messages:
                    async for message in messages:
                        comments += "comment" in message
                        if comments == 2:
                            break
        assert comments == 2


async def test_a_suspension_ends_an_open_stream_with_an_error_event(hub: HubClient, alice: Agent, bob: Agent) -> None:
    frames: list[dict[str, Any]] = []
    auth = {"authorization": f"Bearer {bob.access_token}"}
    with anyio.fail_after(30):
        async with open_sse(hub.server.url, "/api/events/stream", auth) as response:
            assert response.status == 200
            await hub.call("admin.agents.suspend", {"agent": bob.agent_id}, token=hub.admin_key)
            await send(hub, alice, bob, "after the suspension")
            async with aclosing(response.messages()) as messages:
                async for message in messages:
                    if "event" in message:
                        frames.append(message)
    assert [f["event"] for f in frames] == ["error"]
    assert json.loads(frames[0]["data"])["code"] in {"unauthorized", "forbidden"}
