"""Test-side helpers for the messaging tests: conversations, paging, and event streams over a WebSocket."""

import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import httpx
import pytest

from bridges.client._websocket import ConnectionClosed

from .client import Agent, HubClient, RpcError, RpcSocket
from .servers import HubServer

WAIT = 15.0
"""Upper bound for anything a test waits on; a correct hub answers far sooner."""


@contextmanager
def raises_code(code: str) -> Iterator[pytest.ExceptionInfo[RpcError]]:
    """Expect the hub's error `code` (the string in `error.data.code`), never its message."""
    with pytest.raises(RpcError) as caught:
        yield caught
    assert caught.value.code == code, caught.value.error


async def group(hub: HubClient, owner: Agent, *members: Agent, title: str = "a group") -> str:
    created = await hub.call(
        "conversations.create_group", {"title": title, "members": [m.agent_id for m in members]},
        token=owner.access_token,
    )
    return str(created["conversation_id"])


async def direct(hub: HubClient, agent: Agent, peer: Agent) -> str:
    opened = await hub.call("conversations.open_direct", {"agent": peer.handle}, token=agent.access_token)
    return str(opened["conversation_id"])


async def send(hub: HubClient, agent: Agent, conversation_id: str, body: str, **params: Any) -> dict[str, Any]:
    return await hub.call(  # type: ignore[no-any-return]
        "messages.send", {"conversation_id": conversation_id, "body": body, **params}, token=agent.access_token
    )


async def timeline(hub: HubClient, agent: Agent, conversation_id: str, page: int = 200) -> list[dict[str, Any]]:
    """Every message `agent` may list, oldest first, paging forward with `after`."""
    items: list[dict[str, Any]] = []
    after = 0
    while True:
        result = await hub.call("messages.list", {"conversation_id": conversation_id, "after": after, "limit": page},
                                token=agent.access_token)
        items += result["items"]
        if not result["has_more"]:
            return items
        after = result["items"][-1]["seq"]


async def bodies(hub: HubClient, agent: Agent, conversation_id: str) -> list[str | None]:
    return [m["body"] for m in await timeline(hub, agent, conversation_id) if m["kind"] == "message"]


async def all_events(hub: HubClient, agent: Agent, after: int = 0, page: int = 200) -> list[dict[str, Any]]:
    """Every event of `agent` after `after`, through `events.list`."""
    items: list[dict[str, Any]] = []
    while True:
        result = await hub.call("events.list", {"after": after, "limit": page}, token=agent.access_token)
        items += result["items"]
        after = result["next_cursor"]
        if not result["has_more"]:
            return items


async def head(hub: HubClient, agent: Agent) -> int:
    """The cursor of `agent`'s newest event (0 if none)."""
    events = await all_events(hub, agent)
    return int(events[-1]["cursor"]) if events else 0


class EventSocket:
    """A WebSocket subscribed to the agent's events: `next()` returns the next pushed event."""

    def __init__(self, ws: RpcSocket) -> None:
        self.ws = ws
        self.start: int | None = None

    async def subscribe(self, after: int | None) -> int:
        result = await self.ws.call("events.subscribe", {} if after is None else {"after": after})
        self.start = int(result["after"])
        return self.start

    async def next(self) -> dict[str, Any]:
        with anyio.fail_after(WAIT):
            while True:
                while self.ws.notifications:
                    frame = self.ws.notifications.pop(0)
                    if frame["method"] == "event":
                        return frame["params"]  # type: ignore[no-any-return]
                frame = json.loads(await self.ws.connection.receive())
                if "method" in frame:
                    self.ws.notifications.append(frame)
                else:
                    raise AssertionError(f"an unexpected response: {frame}")

    async def take(self, count: int) -> list[dict[str, Any]]:
        return [await self.next() for _ in range(count)]

    async def until(self, predicate: Any) -> list[dict[str, Any]]:
        """Events up to and including the first one `predicate` accepts."""
        events = []
        while True:
            events.append(await self.next())
            if predicate(events[-1]):
                return events

    async def closed(self) -> tuple[list[dict[str, Any]], ConnectionClosed]:
        """Read every remaining event until the hub closes the connection; the events and the close."""
        events: list[dict[str, Any]] = []
        with anyio.fail_after(WAIT * 4):
            try:
                while True:
                    events.append(await self.next())
            except ConnectionClosed as closed:
                return events, closed


@asynccontextmanager
async def event_socket(server: HubServer, agent: Agent, after: int | None = 0) -> AsyncIterator[EventSocket]:
    async with await RpcSocket.open(server, agent.access_token) as ws:
        stream = EventSocket(ws)
        await stream.subscribe(after)
        yield stream


def unlabelled_series(text: str) -> dict[str, float]:
    """Every series of the hub's /metrics `text` that carries no labels, by name."""
    return {name: float(value) for name, value in (line.split() for line in text.splitlines()
                                                  if line.startswith("parley_") and "{" not in line)}


async def metric_values(http: httpx.AsyncClient) -> dict[str, float]:
    """The hub's unlabelled /metrics series, by name (gauges and counters it keeps)."""
    return unlabelled_series((await http.get("/metrics")).text)


async def events_list_count(http: httpx.AsyncClient, outcome: str | None = None) -> int:
    """How many `events.list` calls the hub finished (with `outcome`, or all): from its /metrics."""
    text = (await http.get("/metrics")).text
    if outcome is None:
        match = re.search(r'^parley_operation_seconds_count\{operation="events.list"\} (\d+)$', text, re.MULTILINE)
    else:
        match = re.search(rf'^parley_operations_total\{{operation="events.list",outcome="{outcome}"\}} (\d+)$',
                          text, re.MULTILINE)
    return int(match.group(1)) if match else 0
