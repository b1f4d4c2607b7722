"""The REST bridge: one route per operation under /api, generated from the operation table.

Params come from the path, then the query string (GET and DELETE) or the JSON body (POST, PATCH,
PUT). A value given twice (say, in the path and in the body) must agree. Errors use the envelope
`{"error": {"code", "message", "details"}}` with the error's HTTP status; 401 adds
`WWW-Authenticate` and 429 adds `Retry-After` and `X-RateLimit-*`.
"""

import math
import typing
from typing import Any, Final

from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

from hub.core import Hub
from hub.operations import OPERATIONS, Operation
from hub.ratelimit import rate_key
from protocol.errors import (
    HubError,
    InvalidRequest,
    MethodNotAllowed,
    MethodNotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)

from .credentials import address_of, principal_from
from .files import upload_params
from .http_errors import error_response
from .http_rpc import is_json, read_body
from .json_input import NotJson, TooDeep, loads
from .sse import EventStreamResponse

MAX_QUERY_BYTES: Final = 8192
BODY_METHODS: Final = {"POST", "PATCH", "PUT"}
STREAMED_RUN: Final = "workflows.run"
"""With `?stream=true`, answers with the run's events as SSE (see `sse`)."""


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    return any(_is_list(arg) for arg in typing.get_args(annotation))


def _query_params(request: Request, model: type[BaseModel]) -> dict[str, Any]:
    if len(request.url.query.encode()) > MAX_QUERY_BYTES:
        raise PayloadTooLarge(f"the query string is longer than {MAX_QUERY_BYTES} bytes",
                              {"max_bytes": MAX_QUERY_BYTES})
    params: dict[str, Any] = {}
    for name in request.query_params:
        field = model.model_fields.get(name)
        values = request.query_params.getlist(name)
        params[name] = values if field is not None and _is_list(field.annotation) else values[-1]
    return params


async def _body_params(request: Request, hub: Hub) -> dict[str, Any]:
    body = await read_body(request, hub.settings.max_body_bytes)
    if not body:  # no body: no params. Whitespace alone is a body, and not JSON (schemathesis sent "\n")
        return {}
    if not is_json(request.headers.get("content-type", "")):
        raise UnsupportedMediaType("send the request body as application/json")
    max_depth = hub.settings.max_json_depth
    try:
        document = loads(body, "the body", max_depth=max_depth)
    except TooDeep:
        raise InvalidRequest(f"the body nests deeper than {max_depth} levels", {"max_depth": max_depth}) from None
    except NotJson as error:
        raise InvalidRequest(str(error)) from None
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object")
    return document


async def operation_params(request: Request, op: Operation, hub: Hub) -> dict[str, Any]:
    if request.method in BODY_METHODS:
        params = await _body_params(request, hub)
    else:
        params = _query_params(request, op.params)
    given = dict(request.path_params)
    idempotency_key = request.headers.get("idempotency-key")
    if op.idempotency_param and idempotency_key is not None:
        given[op.idempotency_param] = idempotency_key
    for name, value in given.items():
        if name in params and params[name] != value:
            raise InvalidRequest(f"{name!r} is given twice with different values", {"field": name})
        params[name] = value
    return params


def path_route(path: str, operations: list[Operation]) -> Route:
    """One route per path, so a wrong method gets 405 with every allowed method in `Allow`."""
    by_method = {op.http_method: op for op in operations}

    async def endpoint(request: Request) -> Response | EventStreamResponse:
        op = by_method["GET" if request.method == "HEAD" else request.method]  # Starlette adds HEAD to GET
        hub: Hub = request.state.hub
        try:
            caller = await principal_from(hub, request.headers, address_of(request.client))
            if op.takes_upload and request.headers.get("content-type", "").startswith("multipart/form-data"):
                fields, upload = await upload_params(request, hub)
                result = await hub.dispatch_model(caller, op.name, {**_query_params(request, op.params), **fields},
                                                  from_strings=True, upload=upload)
            else:
                params = await operation_params(request, op, hub)
                if op.name == STREAMED_RUN and request.query_params.get("stream") == "true":
                    return EventStreamResponse(hub, request, start=lambda: hub.dispatch(caller, op.name, params),
                                               replayable=params.get(op.idempotency_param or "") is not None)
                result = await hub.dispatch_model(caller, op.name, params,
                                                  from_strings=request.method not in BODY_METHODS)
        except HubError as error:
            return error_response(error)
        bucket = hub.limiter.state(op.rate_class, rate_key(caller.address, caller.agent_id))
        headers = {"X-RateLimit-Limit": str(bucket.limit), "X-RateLimit-Remaining": str(bucket.remaining),
                   "X-RateLimit-Reset": str(math.ceil(bucket.reset_seconds))}
        # The model straight to JSON bytes (pydantic's encoder), not to a dict for json.dumps to walk again.
        return Response(result.model_dump_json(), status_code=op.http_status, headers=headers,
                        media_type="application/json")

    route_class = Route if "{" in path else LiteralPathRoute
    return route_class(path, endpoint, methods=list(by_method))


class LiteralPathRoute(Route):
    """A path without parameters answers every method itself, a wrong one with 405, so that
    `PUT /api/workflows/requests` is not taken for `PUT /api/workflows/{workflow_id}` of a workflow
    named "requests" (Starlette keeps looking for a route that takes the method)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        return (Match.FULL if match is Match.PARTIAL else match), child_scope


def rest_routes() -> list[Route]:
    paths: dict[str, list[Operation]] = {}
    for op in OPERATIONS.values():
        paths.setdefault(op.http_path, []).append(op)
    # Literal paths first: /api/agents/me must not be taken for /api/agents/{agent}.
    ordered = sorted(paths, key=lambda path: path.count("{"))
    return [path_route(path, paths[path]) for path in ordered]


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (no such route, or not with this method), in the hub's envelope."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(MethodNotFound(f"no route {request.method} {request.url.path}"))
    error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    return JSONResponse({"error": error.to_dict()}, status_code=error.http_status, headers=exc.headers)
