"""DESIGN §2's parity rule as a test: every operation in the table is reachable over WebSocket JSON-RPC,
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

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar
from urllib.parse import quote

import anyio
import httpx
import pytest

from hub.operations import OPERATIONS, Operation
from protocol.errors import HubError
from protocol.identity import Scope

from .client import Agent, HubClient, RpcSocket, unique_handle
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


async def bob_admin(world: World) -> None:
    await world.call("alice", "conversations.set_role",
                     {"conversation_id": world.group, "agent_id": world.bob.agent_id, "role": "admin"})


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
SECRETS: Final = {"access_token", "refresh_token", "api_key", "recovery_key", "invite_code", "prefix"}


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
        await world.call("dave", "blocks.add", {"agent": world.alice.agent_id})
        for caller, scope in (("agents-only", Scope.AGENTS_READ), ("messages-only", Scope.MESSAGES_READ)):
            world.credentials[caller] = await hub.api_key(world.alice, scopes=[scope.value])
    return world


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
