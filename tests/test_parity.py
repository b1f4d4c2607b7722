"""docs/design.md §2's parity rule as a test: every operation in the table is reachable over WebSocket JSON-RPC,
HTTP JSON-RPC and REST, with the same result for the same input and the same error for the same bad input.

Each operation has a success case (params, the calling agent, any setup) and error cases. A case runs
its call over the three transports and compares what they answer:

- `read` (read-only operations): one world, the three results must be equal.
- `same` (idempotent operations whose repeat answers exactly as the first call): one world, the
  three results must be equal - the first call also does the work, the others repeat it.
- `fresh` (anything else that creates or changes state): each transport gets a world of its own,
  built the same way; results must be equal once ids, timestamps and secrets are masked (values the
  world created are replaced by their names, so `sender_id` must still be *alice*'s).

Errors must carry the same `code` on every transport (REST `error.code`, JSON-RPC `error.data.code`
with one JSON-RPC numeric code), and the REST status must be that error's HTTP status. Besides the
hand-written error cases, every operation that needs a scope is called without a credential
(`unauthorized`) and with a credential lacking its scope (`forbidden`).

The REST call is built from the operation's `http_method` and `http_path`: path params substituted,
the rest in the query string (GET, DELETE) or the JSON body, so these tests hard-code no route.
"""

import base64
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeVar
from urllib.parse import quote

import anyio
import httpx
import pytest

from hub.operations import OPERATIONS, Operation
from protocol.errors import HubError
from protocol.identity import Scope

from .client import Agent, HubClient, RpcSocket, unique_handle
from .conftest import diagonal
from .messaging import WAIT
from .servers import HubServer

BODY_METHODS: Final = {"POST", "PATCH", "PUT"}
STATUS_OF_CODE: Final = {cls.code.value: cls.http_status for cls in HubError.__subclasses__()}
TOO_LONG: Final = "x" * 65
"""Longer than any id or handle may be (64)."""
NOBODY: Final = "nobody-parity-zz"

T = TypeVar("T")


async def gathered(calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """The results of `calls`, run concurrently (to build independent state faster)."""
    results: list[Any] = [None] * len(calls)

    async def run(index: int, call: Callable[[], Awaitable[T]]) -> None:
        results[index] = await call()

    async with anyio.create_task_group() as tg:
        for index, call in enumerate(calls):
            tg.start_soon(run, index, call)
    return results


# -- what a transport answered ------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    transport: str
    result: Any = None
    code: str | None = None
    """The hub's error code string, when the call failed."""
    rpc_code: int | None = None
    """The JSON-RPC numeric error code (JSON-RPC transports only)."""
    status: int | None = None
    """The HTTP status (REST only)."""

    @property
    def failed(self) -> bool:
        return self.code is not None


class Transport(ABC):
    name: str

    @abstractmethod
    async def call(self, op: Operation, params: dict[str, Any], credential: str | None) -> Outcome: ...


def rpc_outcome(transport: str, frame: dict[str, Any]) -> Outcome:
    if "error" in frame:
        return Outcome(transport, code=frame["error"]["data"]["code"], rpc_code=frame["error"]["code"])
    return Outcome(transport, result=frame["result"])


class WebSocketRpc(Transport):
    """JSON-RPC over WebSocket: one connection per credential, opened on first use."""

    name = "websocket"

    def __init__(self, server: HubServer, stack: AsyncExitStack) -> None:
        self._server = server
        self._stack = stack
        self._sockets: dict[str | None, RpcSocket] = {}

    async def call(self, op: Operation, params: dict[str, Any], credential: str | None) -> Outcome:
        if credential not in self._sockets:
            socket = await RpcSocket.open(self._server, credential)
            self._sockets[credential] = await self._stack.enter_async_context(socket)
        ws = self._sockets[credential]
        await ws.send({"jsonrpc": "2.0", "id": 1, "method": op.name, "params": params})
        frame = await ws.receive()
        assert frame.get("id") == 1, frame
        return rpc_outcome(self.name, frame)


class HttpRpc(Transport):
    name = "http-rpc"

    def __init__(self, hub: HubClient) -> None:
        self._hub = hub

    async def call(self, op: Operation, params: dict[str, Any], credential: str | None) -> Outcome:
        response = await self._hub.post_rpc({"jsonrpc": "2.0", "id": 1, "method": op.name, "params": params},
                                            credential)
        assert response.status_code == 200, response.text
        return rpc_outcome(self.name, response.json())


def query_value(value: Any) -> list[str]:
    """A JSON value as query-string values (a list repeats its name)."""
    if isinstance(value, list):
        return [item for element in value for item in query_value(element)]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, (int, float, str)):
        return [str(value)]
    raise AssertionError(f"a parity case gives a GET/DELETE param that a query string cannot carry: {value!r}")


def rest_request(op: Operation, params: dict[str, Any]) -> dict[str, Any]:
    """httpx.request arguments for `op` with `params`, from the table's method and path."""
    rest = dict(params)
    path = op.http_path
    for name in re.findall(r"{(\w+)}", op.http_path):
        assert name in rest, f"{op.name}: a parity case must give the path param {name!r}"
        path = path.replace("{" + name + "}", quote(str(rest.pop(name)), safe=""))
    if op.http_method in BODY_METHODS:
        return {"method": op.http_method, "url": path, "json": rest}
    query = [(name, item) for name, value in rest.items() for item in query_value(value)]
    return {"method": op.http_method, "url": path, "params": query}


class Rest(Transport):
    name = "rest"

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def call(self, op: Operation, params: dict[str, Any], credential: str | None) -> Outcome:
        headers = {"authorization": f"Bearer {credential}"} if credential else {}
        response = await self._http.request(**rest_request(op, params), headers=headers)
        body = response.json()
        if response.status_code >= 400:
            assert set(body) == {"error"}, body
            return Outcome(self.name, code=body["error"]["code"], status=response.status_code)
        return Outcome(self.name, result=body, status=response.status_code)


@pytest.fixture
async def transports(hub: HubClient) -> AsyncIterator[list[Transport]]:
    async with AsyncExitStack() as stack:
        yield [WebSocketRpc(hub.server, stack), HttpRpc(hub), Rest(hub.http)]


# -- the world a case runs in -------------------------------------------------------------------------


@dataclass
class World:
    """Three agents: alice and bob share a direct conversation (`dm`) and a group alice owns
    (`group`, where alice wrote `m1`); carol is in neither. `names` maps every value the world
    created (ids, handles) to a stable name, for comparing worlds built the same way."""

    hub: HubClient
    agents: dict[str, Agent]
    dm: str
    group: str
    m1: str
    names: dict[str, str] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)
    """Extra callers: API keys and tokens made by setups, by name."""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    async def build(cls, hub: HubClient) -> "World":
        # One after the other: ids order members that joined together, so worlds must agree on it.
        agents = {name: await hub.register(name) for name in ("alice", "bob", "carol")}
        alice, bob = agents["alice"], agents["bob"]
        dm = (await hub.call("conversations.open_direct", {"agent": bob.handle}, alice.access_token))["conversation_id"]
        group = (await hub.call("conversations.create_group", {"title": "parity", "members": [bob.agent_id]},
                                alice.access_token))["conversation_id"]
        m1 = (await hub.call("messages.send", {"conversation_id": group, "body": "hello"},
                             alice.access_token))["message_id"]
        world = cls(hub, agents, dm, group, m1)
        for name, agent in agents.items():
            world.name(agent.agent_id, name)
            world.name(agent.handle, f"{name}.handle")
        world.name(dm, "dm")
        world.name(group, "group")
        world.name(m1, "m1")
        return world

    def __getattr__(self, name: str) -> Agent:
        agents = self.__dict__.get("agents", {})
        if name in agents:
            return agents[name]  # type: ignore[no-any-return]
        raise AttributeError(name)

    def name(self, value: str, name: str) -> str:
        self.names[value] = f"<{name}>"
        return value

    def new_handle(self, stem: str) -> str:
        return self.name(unique_handle(stem), f"{stem}.handle")

    def credential(self, caller: str) -> str | None:
        if caller == "anonymous":
            return None
        if caller == "admin":
            return self.hub.admin_key
        if caller in self.credentials:
            return self.credentials[caller]
        return self.agents[caller].access_token

    async def call(self, caller: str, method: str, params: dict[str, Any]) -> Any:
        """A setup call over HTTP JSON-RPC."""
        return await self.hub.call(method, params, token=self.credential(caller))


Params = Callable[[World], dict[str, Any]]
Setup = Callable[[World], Awaitable[None]]
Mode = Literal["read", "same", "fresh"]


@dataclass(frozen=True)
class Case:
    params: Params
    caller: str = "alice"
    """alice, bob, carol, admin (the bootstrap admin's API key), anonymous, or a setup's credential."""
    mode: Mode = "fresh"
    setup: Setup | None = None


@dataclass(frozen=True)
class ErrorCase:
    label: str
    params: Params
    code: str
    caller: str = "alice"
    setup: Setup | None = None


# -- setups -------------------------------------------------------------------------------------------


async def api_key(world: World) -> None:
    created = await world.call("alice", "keys.create", {"name": "parity"})
    world.extra["api_key"] = created["api_key"]
    world.extra["key_id"] = world.name(created["key"]["key_id"], "key")


async def carol_blocked(world: World) -> None:
    block = await world.call("alice", "blocks.add", {"agent": world.carol.agent_id})
    world.extra["block_id"] = world.name(block["block_id"], "block")


async def carol_suspended(world: World) -> None:
    await world.call("admin", "admin.agents.suspend", {"agent": world.carol.agent_id})


async def carol_limited(world: World) -> None:
    await world.call("admin", "admin.set_limits", {"agent": world.carol.agent_id, "messages_per_day": 5,
                                                   "storage_mb": 10})


def days_ago(days: int) -> str:
    """A UTC day: usage of days past no longer changes, so reads of it compare exactly."""
    return (datetime.now(UTC).date() - timedelta(days=days)).isoformat()


async def bob_admin(world: World) -> None:
    await world.call("alice", "conversations.set_role",
                     {"conversation_id": world.group, "agent_id": world.bob.agent_id, "role": "admin"})


async def memory(world: World) -> None:
    created = await world.call("alice", "memories.create", {"content": "parity keeps its promises", "tags": ["p"]})
    world.extra["memory_id"] = world.name(created["memory"]["memory_id"], "memory")
    with anyio.fail_after(WAIT):  # embedded in the background: until then `memories.stats` changes under us
        while not (stats := await world.call("alice", "memories.stats", {}))["embedded"] and stats["semantic_search"]:
            await anyio.sleep(0.05)


async def archived_memory(world: World) -> None:
    await memory(world)
    await world.call("alice", "memories.archive", {"memory_id": world.extra["memory_id"]})


async def a_file(world: World) -> None:
    uploaded = await world.call("alice", "files.upload", {"name": "notes.txt",
                                                          "content_base64": base64.b64encode(b"parity notes").decode()})
    world.extra["file_id"] = world.name(uploaded["file_id"], "file")


async def a_document(world: World) -> None:
    added = await world.call("alice", "documents.add", {"title": "Parity", "text": "Parity keeps every promise."})
    world.extra["document_id"] = world.name(added["document_id"], "document")
    with anyio.fail_after(WAIT):  # ingested in the background: until it is done, reads change under us
        while (await world.call("alice", "documents.get", {"document_id": added["document_id"]}))["state"] != "ready":
            await anyio.sleep(0.05)
        semantic = (await world.call("alice", "memories.stats", {}))["semantic_search"]
        while semantic and not (await world.call("alice", "documents.store", {}))["embedded"]:
            await anyio.sleep(0.05)  # embedded in the background too: `documents.store` counts it


async def an_excluded_document(world: World) -> None:
    await a_document(world)
    await world.call("alice", "documents.exclude", {"document_id": world.extra["document_id"]})


PARITY_WORKFLOW: Final = {"name": "Parity",
                           "input_schema": {"type": "object", "properties": {"x": {"type": "integer"}}},
                           "nodes": [{"id": "double", "type": "transform", "value": "{{ (input.x or 1) * 2 }}"}]}


async def a_workflow(world: World) -> None:
    created = await world.call("alice", "workflows.create", PARITY_WORKFLOW)
    world.extra["workflow_id"] = world.name(created["workflow_id"], "workflow")


async def a_workflow_saved_twice(world: World) -> None:
    await a_workflow(world)
    await world.call("alice", "workflows.update", {"workflow_id": world.extra["workflow_id"], **PARITY_WORKFLOW,
                                                   "description": "again"})


async def a_finished_run(world: World) -> None:
    await a_workflow(world)
    started = await world.call("alice", "workflows.run", {"workflow_id": world.extra["workflow_id"], "input": {"x": 2}})
    world.extra["execution_id"] = world.name(started["execution_id"], "execution")
    await world.call("alice", "executions.get", {"execution_id": started["execution_id"], "wait_seconds": 10})


async def a_schedule(world: World) -> None:
    await a_workflow(world)
    created = await world.call("alice", "schedules.create", {"workflow_id": world.extra["workflow_id"],
                                                             "cron": "0 3 1 1 *", "input": {"x": 4}})
    world.extra["schedule_id"] = world.name(created["schedule_id"], "schedule")


async def a_waiting_approval(world: World) -> None:
    created = await world.call("alice", "workflows.create", {"name": "Gate", "nodes": [
        {"id": "gate", "type": "approval", "approver": world.bob.handle, "prompt": "Go?"}]})
    started = await world.call("alice", "workflows.run", {"workflow_id": created["workflow_id"]})
    world.extra["execution_id"] = world.name(started["execution_id"], "execution")
    with anyio.fail_after(WAIT):  # run in the background: until it waits, reads change under us
        while (await world.call("alice", "executions.get", {"execution_id": started["execution_id"]}))[
                "status"] != "waiting":
            await anyio.sleep(0.05)


PARITY_HOOK: Final = "http://1.1.1.1:9/parley-parity"
"""Public, so the shared hub (no outbound allow-list) takes it; nothing listens there, and only `a_delivery`
makes the hub try it."""


async def a_webhook(world: World) -> None:
    created = await world.call("alice", "webhooks.create", {"url": PARITY_HOOK, "event_types": ["execution.*"]})
    world.extra["webhook_id"] = world.name(created["webhook"]["webhook_id"], "webhook")


async def a_delivery(world: World) -> None:
    created = await world.call("alice", "webhooks.create", {"url": PARITY_HOOK, "event_types": ["message.created"]})
    webhook_id = world.extra["webhook_id"] = world.name(created["webhook"]["webhook_id"], "webhook")
    await world.call("bob", "messages.send", {"conversation_id": world.dm, "body": "hook"})
    with anyio.fail_after(WAIT):  # fanned out in the background
        while not (page := await world.call("alice", "webhooks.deliveries", {"webhook_id": webhook_id}))["items"]:
            await anyio.sleep(0.05)
    world.extra["delivery_id"] = world.name(page["items"][0]["delivery_id"], "delivery")


# -- success cases: one per operation -----------------------------------------------------------------


SUCCESS: Final[dict[str, Case]] = {
    # identity
    "auth.register": Case(lambda w: {"handle": w.new_handle("newbie"), "display_name": "New"}, caller="anonymous"),
    "auth.token": Case(lambda w: {"api_key": w.extra["api_key"]}, caller="anonymous", setup=api_key),
    "auth.refresh": Case(lambda w: {"refresh_token": w.alice.refresh_token}, caller="anonymous"),
    "auth.recover": Case(lambda w: {"agent": w.alice.handle, "recovery_key": w.alice.recovery_key},
                         caller="anonymous"),
    "auth.logout": Case(lambda w: {"everywhere": True}),
    "auth.whoami": Case(lambda w: {}, mode="read"),
    "keys.create": Case(lambda w: {"name": "ci", "scopes": ["messages:read"], "expires_in_days": 30}),
    "keys.list": Case(lambda w: {}, mode="read", setup=api_key),
    "keys.revoke": Case(lambda w: {"key_id": w.extra["key_id"]}, setup=api_key),
    # agents
    "agents.get": Case(lambda w: {"agent": w.bob.handle}, mode="read"),
    "agents.search": Case(lambda w: {"q": w.alice.handle, "limit": 5}, mode="read"),
    "agents.update_profile": Case(lambda w: {"display_name": "Alice", "tags": ["parity"], "metadata": {"v": 1}}),
    # admin
    "admin.agents.list": Case(lambda w: {"suspended": False, "limit": 3}, caller="admin", mode="read"),
    "admin.agents.suspend": Case(lambda w: {"agent": w.carol.handle, "reason": "parity"}, caller="admin"),
    "admin.agents.unsuspend": Case(lambda w: {"agent": w.carol.agent_id}, caller="admin", setup=carol_suspended),
    "admin.invites.create": Case(lambda w: {"uses": 2, "expires_in_hours": 1}, caller="admin"),
    # usage and limits
    "usage.get": Case(lambda w: {"from_day": days_ago(2), "to_day": days_ago(1)}, mode="read"),
    "admin.usage": Case(lambda w: {"from_day": days_ago(1), "to_day": days_ago(1), "sort": "messages_sent",
                                   "limit": 3}, caller="admin", mode="read"),
    "admin.analytics": Case(lambda w: {"from_day": days_ago(3), "to_day": days_ago(1)}, caller="admin", mode="read"),
    "admin.set_limits": Case(lambda w: {"agent": w.carol.handle, "messages_per_day": 7, "memory_mb": 3},
                             caller="admin", mode="same"),
    "admin.clear_limits": Case(lambda w: {"agent": w.carol.agent_id, "names": ["messages_per_day"]}, caller="admin",
                               mode="same", setup=carol_limited),
    # conversations
    "conversations.open_direct": Case(lambda w: {"agent": w.carol.handle}, mode="same"),
    "conversations.create_group": Case(lambda w: {"title": "team", "topic": "t", "members": [w.bob.handle]}),
    "conversations.get": Case(lambda w: {"conversation_id": w.group}, mode="read"),
    "conversations.list": Case(lambda w: {"limit": 10}, mode="read"),
    "conversations.update": Case(lambda w: {"conversation_id": w.group, "title": "renamed", "topic": "new topic"}),
    "conversations.add_members": Case(lambda w: {"conversation_id": w.group, "agents": [w.carol.handle]}),
    "conversations.remove_member": Case(lambda w: {"conversation_id": w.group, "agent_id": w.bob.agent_id}),
    "conversations.set_role": Case(lambda w: {"conversation_id": w.group, "agent_id": w.bob.agent_id,
                                              "role": "admin"}),
    "conversations.leave": Case(lambda w: {"conversation_id": w.group}, caller="bob"),
    # messages
    "messages.send": Case(lambda w: {"conversation_id": w.dm, "body": "same", "client_msg_id": "parity-1",
                                     "metadata": {"k": "v"}}, mode="same"),
    "messages.list": Case(lambda w: {"conversation_id": w.group, "after": 0, "limit": 10}, mode="read"),
    "messages.get": Case(lambda w: {"message_id": w.m1}, caller="bob", mode="read"),
    "messages.edit": Case(lambda w: {"message_id": w.m1, "body": "edited", "content_type": "markdown"}),
    "messages.delete": Case(lambda w: {"message_id": w.m1}),
    "messages.mark_read": Case(lambda w: {"conversation_id": w.group, "seq": 2}, caller="bob", mode="same"),
    # blocks
    "blocks.add": Case(lambda w: {"agent": w.carol.handle}, mode="same"),
    "blocks.remove": Case(lambda w: {"block_id": w.extra["block_id"]}, setup=carol_blocked),
    "blocks.list": Case(lambda w: {"limit": 10}, mode="read", setup=carol_blocked),
    # events
    "events.list": Case(lambda w: {"after": 0, "limit": 20}, caller="bob", mode="read"),
    # memories
    "memories.create": Case(lambda w: {"content": "the group meets on Tuesdays", "conversation_id": w.group,
                                       "category": "fact", "tags": ["meeting"], "importance": 4,
                                       "source_message_id": w.m1}),
    "memories.get": Case(lambda w: {"memory_id": w.extra["memory_id"]}, mode="read", setup=memory),
    "memories.list": Case(lambda w: {"tags": ["p"], "order": "importance", "limit": 5}, mode="read", setup=memory),
    "memories.search": Case(lambda w: {"query": "promises", "mode": "lexical", "limit": 3}, mode="read",
                            setup=memory),
    "memories.update": Case(lambda w: {"memory_id": w.extra["memory_id"], "content": "parity keeps them all",
                                       "importance": 5, "expected_version": 1}, setup=memory),
    "memories.history": Case(lambda w: {"memory_id": w.extra["memory_id"], "limit": 5}, mode="read", setup=memory),
    "memories.archive": Case(lambda w: {"memory_id": w.extra["memory_id"]}, mode="same", setup=memory),
    "memories.unarchive": Case(lambda w: {"memory_id": w.extra["memory_id"]}, mode="same", setup=archived_memory),
    "memories.erase": Case(lambda w: {"memory_id": w.extra["memory_id"]}, setup=memory),
    "memories.stats": Case(lambda w: {"conversation_id": w.group}, mode="read", setup=memory),
    # files
    "files.upload": Case(lambda w: {"name": "hello.txt", "content_base64": base64.b64encode(b"hello").decode(),
                                    "expires_in_seconds": 3600}),
    "files.get": Case(lambda w: {"file_id": w.extra["file_id"]}, mode="read", setup=a_file),
    "files.list": Case(lambda w: {"limit": 5}, mode="read", setup=a_file),
    "files.delete": Case(lambda w: {"file_id": w.extra["file_id"]}, setup=a_file),
    # documents
    "documents.add": Case(lambda w: {"title": "Notes", "text": "Meetings are on Tuesdays.",
                                     "conversation_id": w.group}),
    "documents.get": Case(lambda w: {"document_id": w.extra["document_id"]}, mode="read", setup=a_document),
    "documents.text": Case(lambda w: {"document_id": w.extra["document_id"]}, mode="read", setup=a_document),
    "documents.list": Case(lambda w: {"state": "ready", "limit": 5}, mode="read", setup=a_document),
    "documents.search": Case(lambda w: {"query": "promise", "mode": "lexical", "group_by_document": True},
                             mode="read", setup=a_document),
    "documents.status": Case(lambda w: {}, mode="read", setup=a_document),
    "documents.audit": Case(lambda w: {"document_id": w.extra["document_id"]}, mode="read", setup=a_document),
    "documents.exclude": Case(lambda w: {"document_id": w.extra["document_id"]}, mode="same", setup=a_document),
    "documents.include": Case(lambda w: {"document_id": w.extra["document_id"]}, mode="same",
                              setup=an_excluded_document),
    "documents.reingest": Case(lambda w: {"document_id": w.extra["document_id"]}, setup=a_document),
    "documents.delete": Case(lambda w: {"document_id": w.extra["document_id"]}, setup=a_document),
    "documents.store": Case(lambda w: {}, mode="read", setup=a_document),
    # workflows
    "workflows.create": Case(lambda w: PARITY_WORKFLOW),
    "workflows.update": Case(lambda w: {"workflow_id": w.extra["workflow_id"], **PARITY_WORKFLOW, "name": "Parity 2"},
                             setup=a_workflow),
    "workflows.get": Case(lambda w: {"workflow_id": w.extra["workflow_id"]}, mode="read", setup=a_workflow),
    "workflows.list": Case(lambda w: {"limit": 5}, mode="read", setup=a_workflow),
    "workflows.versions": Case(lambda w: {"workflow_id": w.extra["workflow_id"]}, mode="read",
                               setup=a_workflow_saved_twice),
    "workflows.restore": Case(lambda w: {"workflow_id": w.extra["workflow_id"], "version": 1},
                              setup=a_workflow_saved_twice),
    "workflows.delete": Case(lambda w: {"workflow_id": w.extra["workflow_id"]}, setup=a_workflow),
    "workflows.run": Case(lambda w: {"workflow_id": w.extra["workflow_id"], "input": {"x": 3},
                                     "idempotency_key": "parity-run"}, setup=a_workflow),
    "workflows.respond": Case(lambda w: {"execution_id": w.extra["execution_id"], "node_id": "gate", "approve": True},
                              caller="bob", setup=a_waiting_approval),
    "workflows.requests": Case(lambda w: {}, caller="bob", mode="read", setup=a_waiting_approval),
    "executions.get": Case(lambda w: {"execution_id": w.extra["execution_id"]}, mode="read", setup=a_finished_run),
    "executions.list": Case(lambda w: {"status": "completed"}, mode="read", setup=a_finished_run),
    "executions.cancel": Case(lambda w: {"execution_id": w.extra["execution_id"]}, setup=a_waiting_approval),
    "executions.stats": Case(lambda w: {"since": "2020-01-01T00:00:00Z", "until": "2100-01-01T00:00:00Z"},
                             mode="read", setup=a_finished_run),
    # schedules
    "schedules.create": Case(lambda w: {"workflow_id": w.extra["workflow_id"], "cron": "30 2 * * 1-5",
                                        "timezone": "Europe/Berlin", "input": {"x": 5}}, setup=a_workflow),
    "schedules.get": Case(lambda w: {"schedule_id": w.extra["schedule_id"]}, mode="read", setup=a_schedule),
    "schedules.list": Case(lambda w: {"workflow_id": w.extra["workflow_id"]}, mode="read", setup=a_schedule),
    "schedules.update": Case(lambda w: {"schedule_id": w.extra["schedule_id"], "cron": "0 4 * * *",
                                        "enabled": False}, setup=a_schedule),
    "schedules.delete": Case(lambda w: {"schedule_id": w.extra["schedule_id"]}, setup=a_schedule),
    "schedules.run_now": Case(lambda w: {"schedule_id": w.extra["schedule_id"]}, setup=a_schedule),
    # triggers and webhooks
    "workflows.trigger": Case(lambda w: {"workflow_id": w.extra["workflow_id"], "input": {"x": 3},
                                         "idempotency_key": "parity-trigger"}, setup=a_workflow),
    "workflows.trigger_status": Case(lambda w: {"execution_id": w.extra["execution_id"]}, mode="read",
                                     setup=a_finished_run),
    "webhooks.create": Case(lambda w: {"url": PARITY_HOOK, "event_types": ["execution.*", "message.created"],
                                       "description": "parity"}),
    "webhooks.list": Case(lambda w: {"limit": 5}, mode="read", setup=a_webhook),
    "webhooks.get": Case(lambda w: {"webhook_id": w.extra["webhook_id"]}, mode="read", setup=a_webhook),
    "webhooks.update": Case(lambda w: {"webhook_id": w.extra["webhook_id"], "event_types": ["message.*"],
                                       "description": "changed", "enabled": False}, setup=a_webhook),
    "webhooks.delete": Case(lambda w: {"webhook_id": w.extra["webhook_id"]}, setup=a_webhook),
    "webhooks.rotate_secret": Case(lambda w: {"webhook_id": w.extra["webhook_id"], "grace_seconds": 60},
                                   setup=a_webhook),
    "webhooks.deliveries": Case(lambda w: {"webhook_id": w.extra["webhook_id"]}, mode="read", setup=a_webhook),
    "webhooks.redeliver": Case(lambda w: {"webhook_id": w.extra["webhook_id"], "delivery_id": w.extra["delivery_id"]},
                               setup=a_delivery),
}


# -- error cases --------------------------------------------------------------------------------------


def unknown_field(params: Params) -> Params:
    return lambda w: {**params(w), "colour": "blue"}


def E(label: str, params: Params, code: str = "invalid_request", **kwargs: Any) -> ErrorCase:  # noqa: N802
    return ErrorCase(label, params, code, **kwargs)


ERRORS: Final[dict[str, list[ErrorCase]]] = {
    "auth.register": [
        E("handle-wrong-type", lambda w: {"handle": 5}, caller="anonymous"),
        E("handle-bad-pattern", lambda w: {"handle": "No Spaces!"}, caller="anonymous"),
        E("unknown-field", lambda w: {"handle": unique_handle("x"), "colour": "blue"}, caller="anonymous"),
        E("handle-taken", lambda w: {"handle": w.alice.handle}, "conflict", caller="anonymous"),
    ],
    "auth.token": [
        E("api-key-wrong-type", lambda w: {"api_key": 5}, caller="anonymous"),
        E("api-key-missing", lambda w: {}, caller="anonymous"),
        E("api-key-unknown", lambda w: {"api_key": "pk_not_a_real_key"}, "unauthorized", caller="anonymous"),
    ],
    "auth.refresh": [
        E("token-wrong-type", lambda w: {"refresh_token": ["x"]}, caller="anonymous"),
        E("token-unknown", lambda w: {"refresh_token": "not-a-refresh-token"}, "unauthorized", caller="anonymous"),
    ],
    "auth.recover": [
        E("key-wrong-type", lambda w: {"agent": w.carol.handle, "recovery_key": 5}, caller="anonymous"),
        E("key-wrong", lambda w: {"agent": w.carol.handle, "recovery_key": "rk_wrong"}, "unauthorized",
          caller="anonymous"),
    ],
    "auth.logout": [
        E("everywhere-wrong-type", lambda w: {"everywhere": "yes"}),
        E("unknown-field", lambda w: {"colour": "blue"}),
    ],
    "auth.whoami": [E("unknown-field", lambda w: {"colour": "blue"})],
    "keys.create": [
        E("name-wrong-type", lambda w: {"name": 5}),
        E("scope-unknown", lambda w: {"name": "x", "scopes": ["everything"]}),
        E("expiry-out-of-range", lambda w: {"name": "x", "expires_in_days": 0}),
    ],
    "keys.list": [E("unknown-field", lambda w: {"colour": "blue"})],
    "keys.revoke": [
        E("key-id-too-long", lambda w: {"key_id": TOO_LONG}),
        E("unknown-field", lambda w: {"key_id": "key_nope", "colour": "blue"}),
        E("key-unknown", lambda w: {"key_id": "key_nope"}, "not_found"),
    ],
    "agents.get": [
        E("agent-too-long", lambda w: {"agent": TOO_LONG}),
        E("unknown-field", lambda w: {"agent": w.bob.handle, "colour": "blue"}),
        E("agent-unknown", lambda w: {"agent": NOBODY}, "not_found"),
    ],
    "agents.search": [
        E("limit-wrong-type", lambda w: {"limit": "many"}),
        E("limit-out-of-range", lambda w: {"limit": 0}),
        E("cursor-not-ours", lambda w: {"cursor": "not-a-cursor"}),
        E("unknown-field", lambda w: {"colour": "blue"}),
    ],
    "agents.update_profile": [
        E("visibility-unknown", lambda w: {"visibility": "secret"}),
        E("tags-wrong-type", lambda w: {"tags": "one"}),
        E("handle-taken", lambda w: {"handle": w.bob.handle}, "conflict"),
    ],
    "admin.agents.list": [
        E("suspended-wrong-type", lambda w: {"suspended": "maybe"}, caller="admin"),
        E("unknown-field", lambda w: {"colour": "blue"}, caller="admin"),
    ],
    "admin.agents.suspend": [
        E("reason-wrong-type", lambda w: {"agent": w.carol.handle, "reason": 5}, caller="admin"),
        E("agent-unknown", lambda w: {"agent": NOBODY}, "not_found", caller="admin"),
    ],
    "admin.agents.unsuspend": [
        E("unknown-field", lambda w: {"agent": w.carol.handle, "colour": "blue"}, caller="admin"),
        E("agent-unknown", lambda w: {"agent": NOBODY}, "not_found", caller="admin"),
    ],
    "admin.invites.create": [
        E("uses-out-of-range", lambda w: {"uses": 0}, caller="admin"),
        E("uses-wrong-type", lambda w: {"uses": "two"}, caller="admin"),
    ],
    "usage.get": [
        E("from-after-to", lambda w: {"from_day": days_ago(0), "to_day": days_ago(1)}),
        E("range-too-long", lambda w: {"from_day": days_ago(90)}),
        E("another-agent", lambda w: {"agent": w.bob.handle}),
    ],
    "admin.usage": [
        E("sort-unknown", lambda w: {"sort": "bytes"}, caller="admin"),
        E("to-day-to-come", lambda w: {"to_day": days_ago(-1)}, caller="admin"),
        E("cursor-not-ours", lambda w: {"cursor": "not-a-cursor"}, caller="admin"),
    ],
    "admin.analytics": [E("day-not-a-date", lambda w: {"from_day": "monday"}, caller="admin")],
    "admin.set_limits": [
        E("limit-negative", lambda w: {"agent": w.carol.handle, "messages_per_day": -1}, caller="admin"),
        E("nothing-to-set", lambda w: {"agent": w.carol.handle}, caller="admin"),
        E("agent-unknown", lambda w: {"agent": NOBODY, "messages_per_day": 1}, "not_found", caller="admin"),
    ],
    "admin.clear_limits": [
        E("name-unknown", lambda w: {"agent": w.carol.handle, "names": ["bananas"]}, caller="admin"),
        E("agent-unknown", lambda w: {"agent": NOBODY}, "not_found", caller="admin"),
    ],
    "conversations.open_direct": [
        E("agent-wrong-type", lambda w: {"agent": 5}),
        E("agent-unknown", lambda w: {"agent": NOBODY}, "not_found"),
        E("peer-blocks-caller", lambda w: {"agent": w.dave.handle}, "blocked"),
    ],
    "conversations.create_group": [
        E("title-empty", lambda w: {"title": ""}),
        E("members-wrong-type", lambda w: {"title": "t", "members": w.bob.handle}),
        E("member-unknown", lambda w: {"title": "t", "members": [NOBODY]}, "not_found"),
        E("member-blocks-caller", lambda w: {"title": "t", "members": [w.dave.handle]}, "blocked"),
    ],
    "conversations.get": [
        E("id-too-long", lambda w: {"conversation_id": TOO_LONG}),
        E("unknown-field", lambda w: {"conversation_id": w.group, "colour": "blue"}),
        E("not-a-member", lambda w: {"conversation_id": w.group}, "not_found", caller="carol"),
    ],
    "conversations.list": [
        E("limit-out-of-range", lambda w: {"limit": 201}),
        E("cursor-not-ours", lambda w: {"cursor": "not-a-cursor"}),
    ],
    "conversations.update": [
        E("nothing-to-change", lambda w: {"conversation_id": w.group}),
        E("title-wrong-type", lambda w: {"conversation_id": w.group, "title": 5}),
        E("plain-member", lambda w: {"conversation_id": w.group, "title": "mine"}, "forbidden", caller="bob"),
        E("not-a-member", lambda w: {"conversation_id": w.group, "title": "mine"}, "not_found", caller="carol"),
    ],
    "conversations.add_members": [
        E("agents-empty", lambda w: {"conversation_id": w.group, "agents": []}),
        E("role-unknown", lambda w: {"conversation_id": w.group, "agents": [w.carol.handle], "role": "king"}),
        E("already-a-member", lambda w: {"conversation_id": w.group, "agents": [w.bob.handle]}, "conflict"),
        E("plain-member", lambda w: {"conversation_id": w.group, "agents": [w.carol.handle]}, "forbidden",
          caller="bob"),
        E("agent-blocks-caller", lambda w: {"conversation_id": w.group, "agents": [w.dave.handle]}, "blocked"),
    ],
    "conversations.remove_member": [
        E("agent-too-long", lambda w: {"conversation_id": w.group, "agent_id": TOO_LONG}),
        E("plain-member", lambda w: {"conversation_id": w.group, "agent_id": w.alice.agent_id}, "forbidden",
          caller="bob"),
        E("not-a-member", lambda w: {"conversation_id": w.group, "agent_id": w.bob.agent_id}, "not_found",
          caller="carol"),
    ],
    "conversations.set_role": [
        E("role-unknown", lambda w: {"conversation_id": w.group, "agent_id": w.bob.agent_id, "role": "king"}),
        E("role-missing", lambda w: {"conversation_id": w.group, "agent_id": w.bob.agent_id}),
        E("plain-member", lambda w: {"conversation_id": w.group, "agent_id": w.bob.agent_id, "role": "owner"},
          "forbidden", caller="bob"),
    ],
    "conversations.leave": [
        E("unknown-field", lambda w: {"conversation_id": w.group, "colour": "blue"}, caller="bob"),
        E("not-a-member", lambda w: {"conversation_id": w.group}, "not_found", caller="carol"),
    ],
    "messages.send": [
        E("body-empty", lambda w: {"conversation_id": w.group, "body": ""}),
        E("body-wrong-type", lambda w: {"conversation_id": w.group, "body": 5}),
        E("conversation-and-to", lambda w: {"conversation_id": w.dm, "to": w.bob.handle, "body": "x"}),
        E("body-over-the-limit", lambda w: {"conversation_id": w.group, "body": "x" * (33 * 1024)},
          "payload_too_large"),
        E("not-a-member", lambda w: {"conversation_id": w.group, "body": "x"}, "not_found", caller="carol"),
    ],
    "messages.list": [
        E("after-wrong-type", lambda w: {"conversation_id": w.group, "after": "first"}),
        E("limit-out-of-range", lambda w: {"conversation_id": w.group, "limit": 0}),
        E("not-a-member", lambda w: {"conversation_id": w.group}, "not_found", caller="carol"),
    ],
    "messages.get": [
        E("id-too-long", lambda w: {"message_id": TOO_LONG}),
        E("unknown-field", lambda w: {"message_id": w.m1, "colour": "blue"}),
        E("not-a-member", lambda w: {"message_id": w.m1}, "not_found", caller="carol"),
    ],
    "messages.edit": [
        E("body-empty", lambda w: {"message_id": w.m1, "body": ""}),
        E("content-type-unknown", lambda w: {"message_id": w.m1, "body": "x", "content_type": "html"}),
        E("not-the-sender", lambda w: {"message_id": w.m1, "body": "mine"}, "forbidden", caller="bob"),
        E("message-unknown", lambda w: {"message_id": "msg_nope", "body": "x"}, "not_found"),
    ],
    "messages.delete": [
        E("id-too-long", lambda w: {"message_id": TOO_LONG}),
        E("unknown-field", lambda w: {"message_id": w.m1, "colour": "blue"}),
        E("plain-member-not-sender", lambda w: {"message_id": w.m1}, "forbidden", caller="bob"),
        E("message-unknown", lambda w: {"message_id": "msg_nope"}, "not_found"),
    ],
    "messages.mark_read": [
        E("seq-negative", lambda w: {"conversation_id": w.group, "seq": -1}),
        E("seq-wrong-type", lambda w: {"conversation_id": w.group, "seq": "last"}),
        E("seq-beyond-the-newest", lambda w: {"conversation_id": w.group, "seq": 10_000}),
        E("not-a-member", lambda w: {"conversation_id": w.group, "seq": 1}, "not_found", caller="carol"),
    ],
    "blocks.add": [
        E("neither-agent-nor-conversation", lambda w: {}),
        E("agent-and-conversation", lambda w: {"agent": w.carol.handle, "conversation_id": w.group}),
        E("agent-unknown", lambda w: {"agent": NOBODY}, "not_found"),
    ],
    "blocks.remove": [
        E("id-too-long", lambda w: {"block_id": TOO_LONG}),
        E("block-unknown", lambda w: {"block_id": "blk_nope"}, "not_found"),
    ],
    "blocks.list": [
        E("limit-wrong-type", lambda w: {"limit": "ten"}),
        E("cursor-not-ours", lambda w: {"cursor": "not-a-cursor"}),
    ],
    "events.list": [
        E("after-negative", lambda w: {"after": -1}),
        E("timeout-out-of-range", lambda w: {"timeout": 31}),
        E("unknown-field", lambda w: {"colour": "blue"}),
        E("cursor-beyond-the-newest", lambda w: {"after": 10**12}),
    ],
    "memories.create": [
        E("content-empty", lambda w: {"content": ""}),
        E("importance-out-of-range", lambda w: {"content": "x", "importance": 6}),
        E("tag-bad-pattern", lambda w: {"content": "x", "tags": ["no spaces"]}),
        E("content-over-the-limit", lambda w: {"content": "x" * (9 * 1024)}, "payload_too_large"),
        E("not-a-member", lambda w: {"content": "x", "conversation_id": w.group}, "not_found", caller="carol"),
        E("peer-blocks-caller", lambda w: {"content": "x", "conversation_id": w.extra["dave_dm"]}, "blocked"),
        E("source-not-visible", lambda w: {"content": "x", "source_message_id": w.m1}, "not_found", caller="carol"),
    ],
    "memories.get": [
        E("id-too-long", lambda w: {"memory_id": TOO_LONG}),
        E("memory-unknown", lambda w: {"memory_id": "mem_nope"}, "not_found"),
        E("someone-elses", lambda w: {"memory_id": w.extra["memory_id"]}, "not_found", caller="carol"),
    ],
    "memories.list": [
        E("limit-out-of-range", lambda w: {"limit": 0}),
        E("order-unknown", lambda w: {"order": "random"}),
        E("cursor-not-ours", lambda w: {"cursor": "not-a-cursor"}),
        E("not-a-member", lambda w: {"conversation_id": w.group}, "not_found", caller="carol"),
    ],
    "memories.search": [
        E("query-empty", lambda w: {"query": ""}),
        E("limit-over-50", lambda w: {"query": "x", "limit": 51}),
        E("mode-unknown", lambda w: {"query": "x", "mode": "psychic"}),
        E("not-a-member", lambda w: {"query": "x", "conversation_id": w.group}, "not_found", caller="carol"),
    ],
    "memories.update": [
        E("importance-out-of-range", lambda w: {"memory_id": w.extra["memory_id"], "importance": 0}),
        E("stale-version", lambda w: {"memory_id": w.extra["memory_id"], "pinned": True, "expected_version": 9},
          "conflict"),
        E("someone-elses", lambda w: {"memory_id": w.extra["memory_id"], "pinned": True}, "not_found",
          caller="carol"),
        E("not-the-author", lambda w: {"memory_id": w.extra["shared_memory_id"], "pinned": True}, "forbidden",
          caller="bob"),
    ],
    "memories.history": [
        E("id-too-long", lambda w: {"memory_id": TOO_LONG}),
        E("someone-elses", lambda w: {"memory_id": w.extra["memory_id"]}, "not_found", caller="carol"),
    ],
    "memories.archive": [
        E("unknown-field", lambda w: {"memory_id": w.extra["memory_id"], "colour": "blue"}),
        E("memory-unknown", lambda w: {"memory_id": "mem_nope"}, "not_found"),
    ],
    "memories.unarchive": [
        E("id-too-long", lambda w: {"memory_id": TOO_LONG}),
        E("not-the-author", lambda w: {"memory_id": w.extra["shared_memory_id"]}, "forbidden", caller="bob"),
    ],
    "memories.erase": [
        E("id-too-long", lambda w: {"memory_id": TOO_LONG}),
        E("not-the-author", lambda w: {"memory_id": w.extra["shared_memory_id"]}, "forbidden", caller="bob"),
        E("someone-elses", lambda w: {"memory_id": w.extra["memory_id"]}, "not_found", caller="carol"),
    ],
    "memories.stats": [
        E("unknown-field", lambda w: {"colour": "blue"}),
        E("not-a-member", lambda w: {"conversation_id": w.group}, "not_found", caller="carol"),
    ],
    "files.upload": [
        E("name-with-a-path", lambda w: {"name": "../x.txt", "content_base64": "aGk="}),
        E("not-base64", lambda w: {"name": "x.txt", "content_base64": "%%%"}),
        E("no-bytes", lambda w: {"name": "x.txt"}),
        E("over-the-inline-limit", lambda w: {"name": "x.bin", "content_base64": "A" * (700 * 1024)},
          "payload_too_large"),
    ],
    "files.get": [
        E("id-too-long", lambda w: {"file_id": TOO_LONG}),
        E("file-unknown", lambda w: {"file_id": "fil_nope"}, "not_found"),
        E("someone-elses", lambda w: {"file_id": w.extra["file_id"]}, "not_found", caller="carol"),
    ],
    "files.list": [E("limit-out-of-range", lambda w: {"limit": 0})],
    "files.delete": [
        E("id-too-long", lambda w: {"file_id": TOO_LONG}),
        E("someone-elses", lambda w: {"file_id": w.extra["file_id"]}, "not_found", caller="carol"),
    ],
    "documents.add": [
        E("no-source", lambda w: {"title": "t"}),
        E("text-and-file", lambda w: {"title": "t", "text": "x", "file_id": w.extra["file_id"]}),
        E("text-without-title", lambda w: {"text": "x"}),
        E("file-not-readable", lambda w: {"file_id": w.extra["file_id"]}, "not_found", caller="carol"),
        E("not-a-member", lambda w: {"title": "t", "text": "x", "conversation_id": w.group}, "not_found",
          caller="carol"),
    ],
    "documents.get": [
        E("id-too-long", lambda w: {"document_id": TOO_LONG}),
        E("someone-elses", lambda w: {"document_id": w.extra["document_id"]}, "not_found", caller="carol"),
    ],
    "documents.text": [
        E("id-too-long", lambda w: {"document_id": TOO_LONG}),
        E("document-unknown", lambda w: {"document_id": "doc_nope"}, "not_found"),
    ],
    "documents.list": [
        E("limit-out-of-range", lambda w: {"limit": 0}),
        E("state-unknown", lambda w: {"state": "lost"}),
    ],
    "documents.search": [
        E("query-empty", lambda w: {"query": ""}),
        E("limit-over-50", lambda w: {"query": "x", "limit": 51}),
        E("not-a-member", lambda w: {"query": "x", "conversation_id": w.group}, "not_found", caller="carol"),
    ],
    "documents.status": [
        E("unknown-field", lambda w: {"colour": "blue"}),
        E("not-a-member", lambda w: {"conversation_id": w.group}, "not_found", caller="carol"),
    ],
    "documents.audit": [E("limit-out-of-range", lambda w: {"limit": 0})],
    "documents.exclude": [
        E("id-too-long", lambda w: {"document_id": TOO_LONG}),
        E("document-unknown", lambda w: {"document_id": "doc_nope"}, "not_found"),
    ],
    "documents.include": [E("id-too-long", lambda w: {"document_id": TOO_LONG})],
    "documents.reingest": [E("id-too-long", lambda w: {"document_id": TOO_LONG})],
    "documents.delete": [
        E("id-too-long", lambda w: {"document_id": TOO_LONG}),
        E("someone-elses", lambda w: {"document_id": w.extra["document_id"]}, "not_found", caller="carol"),
    ],
    "documents.store": [E("unknown-field", lambda w: {"colour": "blue"})],
    "workflows.create": [
        E("no-nodes", lambda w: {"name": "x", "nodes": []}),
        E("unknown-step", lambda w: {"name": "x", "nodes": [{"id": "a", "type": "teleport"}]}),
        E("cycle", lambda w: {"name": "x", "nodes": [{"id": "a", "type": "transform", "value": 1},
                                                     {"id": "b", "type": "transform", "value": 1}],
                              "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}]}),
    ],
    "workflows.update": [
        E("someone-elses", lambda w: {"workflow_id": w.extra["workflow_id"], **PARITY_WORKFLOW}, "not_found",
          caller="carol"),
        E("id-malformed", lambda w: {"workflow_id": TOO_LONG, **PARITY_WORKFLOW}),
    ],
    "workflows.get": [
        E("id-malformed", lambda w: {"workflow_id": "wfl_x"}),
        E("someone-elses", lambda w: {"workflow_id": w.extra["workflow_id"]}, "not_found", caller="carol"),
        E("version-unknown", lambda w: {"workflow_id": w.extra["workflow_id"], "version": 9}, "not_found"),
    ],
    "workflows.list": [E("limit-out-of-range", lambda w: {"limit": 0})],
    "workflows.versions": [E("id-malformed", lambda w: {"workflow_id": TOO_LONG})],
    "workflows.restore": [
        E("version-unknown", lambda w: {"workflow_id": w.extra["workflow_id"], "version": 9}, "not_found"),
        E("version-zero", lambda w: {"workflow_id": w.extra["workflow_id"], "version": 0}),
    ],
    "workflows.delete": [
        E("id-malformed", lambda w: {"workflow_id": "wfl_x"}),
        E("someone-elses", lambda w: {"workflow_id": w.extra["workflow_id"]}, "not_found", caller="carol"),
    ],
    "workflows.run": [
        E("input-against-schema", lambda w: {"workflow_id": w.extra["workflow_id"], "input": {"x": "two"}}),
        E("someone-elses", lambda w: {"workflow_id": w.extra["workflow_id"]}, "not_found", caller="carol"),
    ],
    "workflows.respond": [
        E("not-asked", lambda w: {"execution_id": w.extra["execution_id"], "node_id": "gate", "approve": True},
          "not_found", caller="carol"),
        E("no-decision", lambda w: {"execution_id": w.extra["execution_id"], "node_id": "gate"}, caller="bob"),
        E("node-malformed", lambda w: {"execution_id": w.extra["execution_id"], "node_id": "Not A Node"}),
    ],
    "workflows.requests": [E("unknown-field", lambda w: {"colour": "blue"})],
    "executions.get": [
        E("someone-elses", lambda w: {"execution_id": w.extra["execution_id"]}, "not_found", caller="carol"),
        E("wait-too-long", lambda w: {"execution_id": w.extra["execution_id"], "wait_seconds": 61}),
    ],
    "executions.list": [E("status-unknown", lambda w: {"status": "sleeping"})],
    "executions.cancel": [
        E("id-malformed", lambda w: {"execution_id": "exe_x"}),
        E("someone-elses", lambda w: {"execution_id": w.extra["execution_id"]}, "not_found", caller="carol"),
    ],
    "executions.stats": [E("unknown-field", lambda w: {"colour": "blue"})],
    "schedules.create": [
        E("cron-invalid", lambda w: {"workflow_id": w.extra["workflow_id"], "cron": "0 25 * * *"}),
        E("timezone-unknown", lambda w: {"workflow_id": w.extra["workflow_id"], "cron": "0 * * * *",
                                         "timezone": "Atlantis/Capital"}),
        E("someone-elses-workflow", lambda w: {"workflow_id": w.extra["workflow_id"], "cron": "0 * * * *"},
          "not_found", caller="carol"),
    ],
    "schedules.get": [
        E("id-malformed", lambda w: {"schedule_id": "sch_x"}),
        E("someone-elses", lambda w: {"schedule_id": w.extra["schedule_id"]}, "not_found", caller="carol"),
    ],
    "schedules.list": [E("limit-out-of-range", lambda w: {"limit": 0})],
    "schedules.update": [
        E("cron-seconds", lambda w: {"schedule_id": w.extra["schedule_id"], "cron": "* * * * * *"}),
        E("someone-elses", lambda w: {"schedule_id": w.extra["schedule_id"], "enabled": False}, "not_found",
          caller="carol"),
    ],
    "schedules.delete": [
        E("id-malformed", lambda w: {"schedule_id": TOO_LONG}),
        E("someone-elses", lambda w: {"schedule_id": w.extra["schedule_id"]}, "not_found", caller="carol"),
    ],
    "schedules.run_now": [
        E("id-malformed", lambda w: {"schedule_id": "sch_x"}),
        E("someone-elses", lambda w: {"schedule_id": w.extra["schedule_id"]}, "not_found", caller="carol"),
    ],
    "workflows.trigger": [
        E("input-against-schema", lambda w: {"workflow_id": w.extra["workflow_id"], "input": {"x": "two"}}),
        E("someone-elses", lambda w: {"workflow_id": w.extra["workflow_id"]}, "not_found", caller="carol"),
        E("webhook-url-private", lambda w: {"workflow_id": w.extra["workflow_id"], "webhook_url": "http://10.0.0.1/"}),
    ],
    "workflows.trigger_status": [
        E("id-malformed", lambda w: {"execution_id": "exe_x"}),
        E("someone-elses", lambda w: {"execution_id": w.extra["execution_id"]}, "not_found", caller="carol"),
    ],
    "webhooks.create": [
        E("url-private", lambda w: {"url": "http://127.0.0.1:8080/", "event_types": ["*"]}),
        E("event-type-unknown", lambda w: {"url": PARITY_HOOK, "event_types": ["nothing.here"]}),
    ],
    "webhooks.list": [E("limit-out-of-range", lambda w: {"limit": 0})],
    "webhooks.get": [
        E("id-malformed", lambda w: {"webhook_id": "whk_x"}),
        E("someone-elses", lambda w: {"webhook_id": w.extra["webhook_id"]}, "not_found", caller="carol"),
    ],
    "webhooks.update": [
        E("url-private", lambda w: {"webhook_id": w.extra["webhook_id"], "url": "http://192.168.1.1/"}),
        E("someone-elses", lambda w: {"webhook_id": w.extra["webhook_id"], "enabled": False}, "not_found",
          caller="carol"),
    ],
    "webhooks.delete": [
        E("id-malformed", lambda w: {"webhook_id": TOO_LONG}),
        E("someone-elses", lambda w: {"webhook_id": w.extra["webhook_id"]}, "not_found", caller="carol"),
    ],
    "webhooks.rotate_secret": [
        E("grace-too-long", lambda w: {"webhook_id": w.extra["webhook_id"], "grace_seconds": 10**7}),
    ],
    "webhooks.deliveries": [E("status-unknown", lambda w: {"webhook_id": w.extra["webhook_id"], "status": "lost"})],
    "webhooks.redeliver": [
        E("delivery-malformed", lambda w: {"webhook_id": w.extra["webhook_id"], "delivery_id": "whd_x"}),
        E("delivery-unknown", lambda w: {"webhook_id": w.extra["webhook_id"], "delivery_id": "whd_" + "0" * 26},
          "not_found"),
    ],
}


def placeholder_params(op: Operation) -> Params:
    """Params for calls refused before validation: just the path params, so the REST route matches."""
    return lambda w: {name: "x" for name in re.findall(r"{(\w+)}", op.http_path)}


def missing_scope_caller(scope: Scope) -> str:
    return "alice" if scope is Scope.ADMIN else ("messages-only" if scope is Scope.AGENTS_READ else "agents-only")


def all_error_cases() -> list[tuple[str, ErrorCase]]:
    """The hand-written cases, then for every operation that needs a scope: no credential, and one
    without that scope."""
    cases = [(name, case) for name, op_cases in ERRORS.items() for case in op_cases]
    for name, op in OPERATIONS.items():
        if op.scope is not None:
            cases.append((name, E("no-credential", placeholder_params(op), "unauthorized", caller="anonymous")))
            cases.append((name, E("scope-missing", placeholder_params(op), "forbidden",
                                  caller=missing_scope_caller(op.scope))))
    return cases


# -- comparing ----------------------------------------------------------------------------------------

ID: Final = re.compile(r"([a-z]{3})_[0-9a-z]{20,32}")
TIMESTAMP: Final = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
SECRETS: Final = {"access_token", "refresh_token", "api_key", "recovery_key", "invite_code", "prefix", "secret",
                   "webhook_secret"}


def masked(value: Any, names: dict[str, str]) -> Any:
    """`value` with the world's values replaced by their names, other ids by their kind, timestamps
    and secrets by placeholders: what two worlds built the same way must agree on."""
    if isinstance(value, dict):
        return {key: "<secret>" if key in SECRETS and isinstance(item, str) else masked(item, names)
                for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item, names) for item in value]
    if isinstance(value, str):
        if value in names:
            return names[value]
        if match := ID.fullmatch(value):
            return f"<new {match.group(1)}>"
        if TIMESTAMP.fullmatch(value):
            return "<time>"
    return value


def assert_success(op: Operation, outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        assert not outcome.failed, f"{op.name} failed over {outcome.transport}: {outcome}"
    rest = next(outcome for outcome in outcomes if outcome.transport == "rest")
    assert rest.status == op.http_status, f"{op.name}: REST answered {rest.status}, the table says {op.http_status}"


def assert_same(op: Operation, results: dict[str, Any]) -> None:
    first_transport, first = next(iter(results.items()))
    for transport, result in results.items():
        assert result == first, f"{op.name}: {transport} answered differently from {first_transport}"


async def prepare(hub: HubClient, case: Case | ErrorCase, world: World | None = None) -> World:
    world = world or await World.build(hub)
    if case.setup is not None:
        await case.setup(world)
    return world


# -- the tests ----------------------------------------------------------------------------------------


def test_every_operation_in_the_table_has_parity_cases() -> None:
    """A new operation cannot skip parity: it needs a success case and an invalid-params case here."""
    assert set(SUCCESS) == set(OPERATIONS), (
        f"without a success case: {sorted(set(OPERATIONS) - set(SUCCESS))}; "
        f"not in the table: {sorted(set(SUCCESS) - set(OPERATIONS))}"
    )
    assert set(ERRORS) == set(OPERATIONS), (
        f"without error cases: {sorted(set(OPERATIONS) - set(ERRORS))}; "
        f"not in the table: {sorted(set(ERRORS) - set(OPERATIONS))}"
    )
    no_invalid = [name for name, cases in ERRORS.items() if not any(c.code == "invalid_request" for c in cases)]
    assert not no_invalid, f"without an invalid-params case: {no_invalid}"


def test_comparison_modes_match_the_table_flags() -> None:
    """Exact comparison across calls on one world is only sound for read-only or idempotent operations,
    and a read-only operation must be compared exactly."""
    for name, case in SUCCESS.items():
        op = OPERATIONS[name]
        if op.read_only:
            assert case.mode == "read", f"{name} is read-only: compare its results exactly (mode read)"
        elif case.mode == "read":
            raise AssertionError(f"{name} changes state: it cannot use mode read")
        if case.mode == "same":
            assert op.idempotent, f"{name} is not idempotent in the table: it cannot use mode same"


@diagonal  # what is compared is the transports' rendering of one result: each loop and each store once
@pytest.mark.parametrize("name", sorted(SUCCESS))
async def test_an_operation_gives_the_same_result_over_every_transport(
    name: str, hub: HubClient, transports: list[Transport]
) -> None:
    op, case = OPERATIONS[name], SUCCESS[name]
    if case.mode == "fresh":
        worlds = await gathered([lambda: prepare(hub, case) for _ in transports])
    else:
        world = await prepare(hub, case)
        worlds = [world] * len(transports)
    outcomes = [await transport.call(op, case.params(world), world.credential(case.caller))
                for transport, world in zip(transports, worlds, strict=True)]
    assert_success(op, outcomes)
    if case.mode == "fresh":
        assert_same(op, {o.transport: masked(o.result, w.names) for o, w in zip(outcomes, worlds, strict=True)})
    else:
        assert_same(op, {o.transport: o.result for o in outcomes})


@pytest.fixture(scope="module")
async def error_world(hub_server: HubServer) -> World:
    """One world for every error case (a refused call changes nothing), with keys lacking scopes and
    dave, who blocks alice."""
    async with HubClient(hub_server) as hub:
        world = await World.build(hub)
        dave = await hub.register("dave")
        world.agents["dave"] = dave
        world.extra["dave_dm"] = (await world.call("dave", "conversations.open_direct",
                                                   {"agent": world.alice.agent_id}))["conversation_id"]
        await world.call("dave", "blocks.add", {"agent": world.alice.agent_id})
        await a_schedule(world)
        await memory(world)
        await a_file(world)
        await a_document(world)
        await a_waiting_approval(world)
        await a_workflow(world)
        await a_webhook(world)
        shared = await world.call("alice", "memories.create", {"content": "shared", "conversation_id": world.group})
        world.extra["shared_memory_id"] = shared["memory"]["memory_id"]
        for caller, scope in (("agents-only", Scope.AGENTS_READ), ("messages-only", Scope.MESSAGES_READ)):
            world.credentials[caller] = await hub.api_key(world.alice, scopes=[scope.value])
    return world


# The subject is the transports (each loop serves them with its own server); the same bad input gets the
# same answer from either store, so each loop and each store once.
@diagonal
@pytest.mark.parametrize(("name", "case"), all_error_cases(), ids=lambda v: v if isinstance(v, str) else v.label)
async def test_an_operation_gives_the_same_error_for_the_same_bad_input_over_every_transport(
    name: str, case: ErrorCase, error_world: World, transports: list[Transport]
) -> None:
    op = OPERATIONS[name]
    params = case.params(error_world)
    outcomes = [await transport.call(op, params, error_world.credential(case.caller)) for transport in transports]
    for outcome in outcomes:
        assert outcome.code == case.code, f"{name} [{case.label}] over {outcome.transport}: {outcome}"
    rest = next(outcome for outcome in outcomes if outcome.transport == "rest")
    assert rest.status == STATUS_OF_CODE[case.code], f"{name}: REST status {rest.status} for {case.code}"
    rpc_codes = {outcome.rpc_code for outcome in outcomes if outcome.transport != "rest"}
    assert len(rpc_codes) == 1, f"{name}: JSON-RPC numeric codes differ between WebSocket and HTTP: {rpc_codes}"


@pytest.mark.parametrize("name", sorted(name for name, op in OPERATIONS.items() if op.idempotency_param))
async def test_the_idempotency_key_header_stands_for_the_idempotency_param_over_rest(
    name: str, hub: HubClient, transports: list[Transport]
) -> None:
    """A retry over REST with `Idempotency-Key` returns what the JSON-RPC call with the param returned."""
    op, case = OPERATIONS[name], SUCCESS[name]
    assert op.idempotency_param is not None
    world = await prepare(hub, case)
    params = case.params(world)
    assert op.idempotency_param in params, f"the success case of {name} must give {op.idempotency_param!r}"
    websocket = await transports[0].call(op, params, world.credential(case.caller))
    without = {key: value for key, value in params.items() if key != op.idempotency_param}
    response = await hub.http.request(
        **rest_request(op, without),
        headers={"authorization": f"Bearer {world.credential(case.caller)}",
                 "idempotency-key": str(params[op.idempotency_param])},
    )
    assert not websocket.failed, websocket
    assert response.status_code == op.http_status, response.text
    assert response.json() == websocket.result
    # The same key for another request is a conflict (409), never the first result silently.
    response = await hub.http.request(
        **rest_request(op, {**without, **ANOTHER_REQUEST[name]}),
        headers={"authorization": f"Bearer {world.credential(case.caller)}",
                 "idempotency-key": str(params[op.idempotency_param])},
    )
    assert (response.status_code, response.json()["error"]["code"]) == (409, "conflict"), response.text


# What each idempotent operation's success case changes to ask for something else under the same key.
ANOTHER_REQUEST: dict[str, dict[str, Any]] = {"messages.send": {"body": "something else"},
                                              "workflows.run": {"input": {"something": "else"}},
                                              "workflows.trigger": {"input": {"x": 4}}}
