"""Test-side helpers for talking to a real hub: JSON-RPC over HTTP and over WebSocket."""

import itertools
import json
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from bridges.client._websocket import WebSocketConnection

from .servers import HubServer

# Every scope an agent's own credentials carry by default, spelled out (not read from the hub) so a
# scope granted by mistake fails a test.
AGENT_SCOPES = sorted([
    "agents:read", "agents:write", "documents:read", "documents:write", "files:read", "files:write", "keys:manage",
    "memories:read", "memories:write", "messages:read", "messages:write", "webhooks:manage", "workflows:read",
    "workflows:run", "workflows:trigger", "workflows:write",
])


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(json.dumps(error))
        self.error = error
        self.jsonrpc_code: int = error["code"]
        self.code: str = error["data"]["code"]
        self.details: dict[str, Any] = error["data"].get("details", {})


@dataclass
class Agent:
    agent_id: str
    handle: str
    recovery_key: str
    access_token: str
    refresh_token: str


def unique_handle(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:10]}"


class HubClient:
    """JSON-RPC over HTTP against one hub server."""

    def __init__(self, server: HubServer) -> None:
        self.server = server
        self.http = httpx.AsyncClient(base_url=server.url, timeout=30)
        self._ids = itertools.count(1)

    async def __aenter__(self) -> "HubClient":
        return self

    async def __aexit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        await self.http.aclose()

    async def post_rpc(self, body: Any, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return await self.http.post("/rpc", json=body, headers=headers, **kwargs)

    async def post_file(self, name: str, data: bytes, token: str) -> httpx.Response:
        """`POST /api/files` with `data` as the multipart `file` part.

        The body is encoded whole before it is sent: a hub that answers early (413 on the declared
        length) would otherwise leave httpx's streaming multipart generator unfinished, and its
        clean-up then fails at garbage collection on trio.
        """
        encoded = httpx.Request("POST", "/api/files", files={"file": (name, data)})
        encoded.read()
        headers = {"content-type": encoded.headers["content-type"], "authorization": f"Bearer {token}"}
        return await self.http.post("/api/files", content=encoded.content, headers=headers)

    async def call(self, method: str, params: dict[str, Any] | None = None, token: str | None = None) -> Any:
        """The result of `method`, or RpcError carrying the hub's error."""
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params is not None:
            body["params"] = params
        response = await self.post_rpc(body, token)
        payload = response.json()
        if "error" in payload:
            raise RpcError(payload["error"])
        return payload["result"]

    async def register(self, stem: str, **params: Any) -> Agent:
        handle = unique_handle(stem)
        result = await self.call("auth.register", {"handle": handle, **params})
        return Agent(result["agent_id"], result["handle"], result["recovery_key"],
                     result["tokens"]["access_token"], result["tokens"]["refresh_token"])

    async def api_key(self, agent: Agent, **params: Any) -> str:
        created = await self.call("keys.create", {"name": "test", **params}, token=agent.access_token)
        return created["api_key"]

    @property
    def admin_key(self) -> str:
        return self.server.admin["api_key"]


class RpcSocket:
    """JSON-RPC over one WebSocket connection; responses matched by id, notifications kept aside."""

    def __init__(self, connection: WebSocketConnection) -> None:
        self.connection = connection
        self.notifications: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    @classmethod
    async def open(cls, server: HubServer, token: str | None = None) -> "RpcSocket":
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return cls(await WebSocketConnection.connect(server.ws_url, headers))

    async def __aenter__(self) -> "RpcSocket":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()

    async def send(self, payload: Any) -> None:
        await self.connection.send_text(payload if isinstance(payload, str) else json.dumps(payload))

    async def receive(self) -> Any:
        """The next frame that is not a notification."""
        while True:
            frame = json.loads(await self.connection.receive())
            if isinstance(frame, dict) and "method" in frame:
                self.notifications.append(frame)
                continue
            return frame

    async def receive_notification(self) -> dict[str, Any]:
        """The next notification (kept in `notifications` too); a test waiting for one expects no answer meanwhile."""
        while True:
            frame = json.loads(await self.connection.receive())
            if isinstance(frame, dict) and "method" in frame:
                self.notifications.append(frame)
                return frame

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        request_id = next(self._ids)
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            body["params"] = params
        await self.send(body)
        frame = await self.receive()
        assert frame.get("id") == request_id, frame
        if "error" in frame:
            raise RpcError(frame["error"])
        return frame["result"]


# -- helpers for the identity, agents and admin tests ------------------------------------------------

from collections.abc import Awaitable  # noqa: E402  (kept with the helpers that use it)


async def error_of(call: Awaitable[Any]) -> RpcError:
    """The RpcError `call` raises; fails the test when it succeeds instead."""
    try:
        result = await call
    except RpcError as error:
        return error
    raise AssertionError(f"expected an error, got the result {result!r}")


class AddressedHubClient(HubClient):
    """A HubClient whose connections come from another loopback address (e.g. 127.0.0.2), so the hub
    sees a different client address: for per-address limits."""

    def __init__(self, server: HubServer, local_address: str) -> None:  # noqa: D107 - no super(): one http client
        self.server = server
        self.http = httpx.AsyncClient(
            base_url=server.url, timeout=30, transport=httpx.AsyncHTTPTransport(local_address=local_address)
        )
        self._ids = itertools.count(1)
