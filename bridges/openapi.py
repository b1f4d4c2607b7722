"""The OpenAPI 3.1 document of the REST bridge, generated from the operation table's models."""

import functools
import re
from typing import Any, Final

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from hub.operations import OPERATIONS, Operation
from protocol.errors import ErrorEnvelope, HubError
from protocol.events import EventCursor

from .rest import BODY_METHODS, STREAMED_RUN

REF: Final = "#/components/schemas/{model}"
ERROR_STATUSES: Final = sorted({cls.http_status for cls in HubError.__subclasses__()} | {405})
SSE_MESSAGE: Final = {
    # OpenAPI 3.1 reads a text/event-stream `schema` as the shape of one SSE message, not of the stream.
    "type": "object",
    "description": "One SSE message: `id` is the event cursor, `event` its type, `data` the event as JSON.",
    "properties": {
        "id": {"type": "string"},
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer", "minimum": 0},
    },
}



def _path_names(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return defs[ref.rsplit("/", 1)[1]] if ref else schema


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or a value, never JSON null: drop the null branch of `X | None`."""
    branches = [branch for branch in schema.get("anyOf", []) if branch.get("type") != "null"]
    if len(branches) == 1 and "anyOf" in schema:
        return {**{k: v for k, v in schema.items() if k != "anyOf"}, **branches[0]}
    return schema


def _operation(op: Operation, refs: dict[tuple[type[BaseModel], str], Any], defs: dict[str, Any]) -> dict[str, Any]:
    params_schema = _resolve(refs[(op.params, "validation")], defs)
    properties: dict[str, Any] = params_schema.get("properties", {})
    required = set(params_schema.get("required", []))
    path_names = _path_names(op.http_path)
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": properties.get(name, {"type": "string"})}
        for name in path_names
    ]
    document: dict[str, Any] = {
        "operationId": op.name,
        "summary": op.summary,
        "description": f"{op.description}\n\nJSON-RPC method: `{op.name}`.",
        "tags": [op.name.split(".")[0]],
        "parameters": parameters,
        "responses": {
            str(op.http_status): {
                "description": op.summary,
                "content": {"application/json": {"schema": refs[(op.result, "serialization")]}},
            },
            **{
                str(status): {"$ref": "#/components/responses/Error"}
                for status in ERROR_STATUSES
                if status != op.http_status
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}] if op.scope else [{}, {"bearer": []}, {"apiKey": []}],
    }
    if op.idempotency_param:
        parameters.append({
            "name": "Idempotency-Key", "in": "header", "required": False,
            "schema": {key: value for key, value in _not_null(properties[op.idempotency_param]).items()
                       if key not in ("default", "title", "description")},
            "description": f"Makes a retry safe: the same key returns the first result, and the same key with "
                           f"another request is a 409 conflict (sets `{op.idempotency_param}`).",
        })
    if op.scope:
        document["x-required-scope"] = op.scope.value
    rest = {name: schema for name, schema in properties.items() if name not in path_names}
    if op.http_method in BODY_METHODS:
        body_schema = {**params_schema, "properties": rest, "required": sorted(required - set(path_names))}
        if not body_schema["required"]:
            del body_schema["required"]
        document["requestBody"] = {
            "required": bool(required - set(path_names)),
            "content": {"application/json": {"schema": body_schema}},
        }
        if op.takes_upload:  # the file itself, as `bridges.files.upload_params` reads it
            fields = ", ".join(f"`{name}`" for name in rest if name != "content_base64")
            document["requestBody"]["content"]["multipart/form-data"] = {"schema": {
                "type": "object", "required": ["file"],
                "description": f"The file as the part `file`; {fields} as text parts (or in the query string), "
                               "each as in the JSON body. The file's name is the default `name`.",
                "properties": {"file": {"type": "string", "format": "binary"}}}}
    else:
        parameters += [
            {"name": name, "in": "query", "required": name in required, "schema": _not_null(schema),
             **({"description": schema["description"]} if "description" in schema else {})}
            for name, schema in rest.items()
        ]
    if op.name == STREAMED_RUN:
        parameters.append({"name": "stream", "in": "query", "required": False, "schema": {"type": "boolean"},
                           "description": "`true`: answer 200 with the run's events as Server-Sent Events, "
                                          "until it ends, instead of 202 at once."})
        document["responses"]["200"] = {"description": "With `stream=true`: the run's events, until it ends.",
                                        "content": {"text/event-stream": {"schema": SSE_MESSAGE}}}
    return document


def _event_stream(events_list: Operation) -> dict[str, Any]:
    return {
        "operationId": "events.stream",
        "summary": "Live events as Server-Sent Events, resumable with Last-Event-ID.",
        "description": "Each SSE message has `id` = the event cursor, `event` = its type and `data` = the event as "
        "JSON (the items of `events.list`). Starts after `Last-Event-ID` or `after`; without either, live from now. "
        "A `lagged` event (data `{\"resume_after\": cursor}`) ends the stream of a client that fell too far behind.",
        "tags": ["events"],
        "parameters": [
            {"name": "after", "in": "query", "required": False, "schema": TypeAdapter(EventCursor).json_schema()},
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {"description": "The event stream.", "content": {"text/event-stream": {"schema": SSE_MESSAGE}}},
            **{str(status): {"$ref": "#/components/responses/Error"} for status in ERROR_STATUSES},
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "x-required-scope": events_list.scope.value if events_list.scope else None,
    }


@functools.cache
def openapi_document(version: str) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [(ErrorEnvelope, "serialization")]
    for op in OPERATIONS.values():
        models += [(op.params, "validation"), (op.result, "serialization")]
    refs, top = models_json_schema(list(dict.fromkeys(models)), ref_template=REF)
    defs: dict[str, Any] = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS.values():
        paths.setdefault(op.http_path, {})[op.http_method.lower()] = _operation(op, refs, defs)
    paths["/api/events/stream"] = {"get": _event_stream(OPERATIONS["events.list"])}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Parley",
            "version": version,
            "description": "An agent-to-agent messaging hub. Every operation is also a JSON-RPC 2.0 method on "
            "`/rpc` and `/ws`; errors use one envelope everywhere.",
        },
        "paths": paths,
        "components": {
            "schemas": defs,
            "responses": {
                "Error": {
                    "description": "The error envelope; `error.code` says what went wrong.",
                    "content": {"application/json": {"schema": refs[(ErrorEnvelope, "serialization")]}},
                }
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An access token or an API key."},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
