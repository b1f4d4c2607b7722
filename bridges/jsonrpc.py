"""JSON-RPC 2.0 framing shared by the HTTP and WebSocket transports: parse a payload, run each
request through an executor (normally `Hub.dispatch`), assemble the responses.

Batches run concurrently and answer in request order. Notifications run and get no answer. A
payload that is not JSON gets -32700; a request without the 2.0 shape, or JSON deeper than
`max_depth`, gets -32600; a batch larger than `max_batch` is refused whole as `payload_too_large`
(-32013), like every other size limit.
"""

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import BaseModel

from protocol import jsonrpc
from protocol.errors import HubError, InvalidRequest, PayloadTooLarge

from .json_input import NotJson, TooDeep, loads


@dataclass(frozen=True)
class Request:
    method: str
    params: Any
    id: jsonrpc.RequestId
    is_notification: bool


Executor = Callable[[Request], Awaitable[Any]]
"""Runs one request; returns its result (JSON-ready data, or a pydantic model) or raises HubError."""


def encode(response: dict[str, Any] | list[dict[str, Any]]) -> str:
    """A response, or a batch of them, as JSON text.

    A result that is a pydantic model is written by pydantic's serializer (in Rust) straight to JSON
    text, rather than dumped to a dict for `json.dumps` to walk again: half the time for a message.
    """
    if isinstance(response, list):
        return "[" + ",".join(map(encode, response)) + "]"
    result = response.get("result")
    if isinstance(result, BaseModel):
        return _with_model(f'"id":{json.dumps(response["id"])}', "result", result)
    return json.dumps(response, separators=(",", ":"))


def encode_notification(method: str, params: BaseModel | dict[str, Any]) -> str:
    """A notification as JSON text; params that are a model are serialized as `encode` does a result."""
    if isinstance(params, BaseModel):
        return _with_model(f'"method":{json.dumps(method)}', "params", params)
    return json.dumps(jsonrpc.notification(method, params), separators=(",", ":"))


def _with_model(member: str, name: str, model: BaseModel) -> str:
    """The envelope written by hand around `model`'s own JSON: its one other member (the id, the method)
    is JSON text already. (Joining generic `json` output to the model's cost 5-9 µs more a frame.)"""
    return f'{{"jsonrpc":"{jsonrpc.VERSION}",{member},"{name}":{model.model_dump_json()}}}'


class Framing:
    def __init__(self, *, max_batch: int, max_depth: int) -> None:
        self.max_batch = max_batch
        self.max_depth = max_depth

    async def respond(self, payload: str | bytes, execute: Executor) -> str | None:
        """The response to send for `payload` as JSON text, or None when nothing is to be sent
        (notifications)."""
        response = await self._response(payload, execute)
        return None if response is None else encode(response)

    async def _response(self, payload: str | bytes, execute: Executor) -> dict[str, Any] | list[dict[str, Any]] | None:
        try:
            document = loads(payload, max_depth=self.max_depth)
        except TooDeep:
            return self._too_deep()
        except NotJson as error:
            return jsonrpc.envelope_error(None, jsonrpc.PARSE_ERROR, InvalidRequest(str(error)))
        if not isinstance(document, list):
            return await self._respond_one(document, execute)
        if not document:
            return jsonrpc.envelope_error(None, jsonrpc.INVALID_REQUEST, InvalidRequest("an empty batch"))
        if len(document) > self.max_batch:
            error = PayloadTooLarge(f"a batch holds at most {self.max_batch} requests", {"max_batch": self.max_batch})
            return jsonrpc.failure(None, error)
        responses: list[dict[str, Any] | None] = [None] * len(document)

        async def run(index: int, item: Any) -> None:
            responses[index] = await self._respond_one(item, execute)

        async with anyio.create_task_group() as tg:
            for index, item in enumerate(document):
                tg.start_soon(run, index, item)
        answered = [response for response in responses if response is not None]
        return answered or None

    def _too_deep(self) -> dict[str, Any]:
        error = InvalidRequest(f"the payload nests deeper than {self.max_depth} levels", {"max_depth": self.max_depth})
        return jsonrpc.envelope_error(None, jsonrpc.INVALID_REQUEST, error)

    async def _respond_one(self, item: Any, execute: Executor) -> dict[str, Any] | None:
        request = parse_request(item)
        if isinstance(request, dict):
            return request
        try:
            result = await execute(request)
        except HubError as error:
            return None if request.is_notification else jsonrpc.failure(request.id, error)
        return None if request.is_notification else jsonrpc.success(request.id, result)


def parse_request(item: Any) -> Request | dict[str, Any]:
    """A well-formed request, or the -32600 error response for a malformed one."""
    request_id = item.get("id") if isinstance(item, dict) else None
    if not isinstance(request_id, (str, int, type(None))) or isinstance(request_id, bool):
        request_id = None
    problem = None
    if not isinstance(item, dict):
        problem = "a request must be a JSON object"
    elif item.get("jsonrpc") != jsonrpc.VERSION:
        problem = 'a request must have "jsonrpc": "2.0"'
    elif not isinstance(item.get("method"), str):
        problem = 'a request must have a string "method"'
    elif "id" in item and (not isinstance(item["id"], (str, int, type(None))) or isinstance(item["id"], bool)):
        problem = '"id" must be a string, an integer or null'
    elif "params" in item and not isinstance(item["params"], (dict, list)):
        problem = '"params" must be an object or an array'
    elif set(item) - {"jsonrpc", "method", "params", "id"}:
        problem = f"unknown members: {sorted(set(item) - {'jsonrpc', 'method', 'params', 'id'})}"
    if problem is not None:
        return jsonrpc.envelope_error(request_id, jsonrpc.INVALID_REQUEST, InvalidRequest(problem))
    assert isinstance(item, dict)
    return Request(method=item["method"], params=item.get("params"), id=request_id, is_notification="id" not in item)
