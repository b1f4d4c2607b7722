"""A running hub over JSON-RPC at `{url}/rpc`: the path `parley mcp --hub URL` reaches its hub by."""

import itertools
from collections.abc import Mapping
from functools import partial
from typing import Any, Final

import httpx

from mcp_tools.access import HubCaller
from protocol.errors import HubError, Internal

HTTP_TIMEOUT: Final = 60.0
"""Longer than the longest `events.list` long poll (30 s)."""


class RemoteLink:
    """A running hub, over JSON-RPC at `{url}/rpc`; each call carries the credential and is checked there."""

    def __init__(self, url: str, http: httpx.AsyncClient) -> None:
        self._endpoint = url.rstrip("/") + "/rpc"
        self._http = http
        self._ids = itertools.count(1)
        self._agents: dict[str, str] = {}

    async def connect(self, credential: str) -> HubCaller:
        agent_id = self._agents.get(credential)
        if agent_id is None:
            whoami = await self._call(credential, "auth.whoami", {})
            agent_id = self._agents[credential] = str(whoami["agent"]["agent_id"])
        return HubCaller(agent_id, partial(self._call, credential))

    async def _call(self, credential: str, name: str, params: Mapping[str, Any]) -> dict[str, Any]:
        request = {"jsonrpc": "2.0", "id": next(self._ids), "method": name, "params": dict(params)}
        try:
            response = await self._http.post(self._endpoint, json=request,
                                             headers={"authorization": f"Bearer {credential}"})
            body = response.json()
        except httpx.HTTPError as exc:
            raise Internal(f"the hub at {self._endpoint} cannot be reached: {exc}") from None
        except ValueError:
            raise Internal(f"the hub at {self._endpoint} answered HTTP {response.status_code} without JSON") from None
        if not isinstance(body, dict):
            raise Internal(f"the hub at {self._endpoint} answered with something that is not JSON-RPC")
        if "error" in body:
            error = body["error"]
            raise HubError.from_dict(error.get("data") or {"code": "internal", "message": error.get("message")})
        result = body.get("result")
        return result if isinstance(result, dict) else {"result": result}
