"""What a Parley tool is, and how one becomes an MCP tool.

A tool is an async function `(hub: HubCaller, **arguments) -> output model`, declared with
`@toolset.tool(title, operations=(...))`. Its docstring is its description, its annotated parameters
(after `hub`) its input schema, its return model its output schema. `operations` names the
operations of the table it calls: the tool's annotations are derived from their flags (read-only
only if all are; destructive if any is; idempotent only if all are), so they cannot drift from the
table.

`build_tool` wraps the function for the SDK: it authenticates the caller for every call
(`Access.caller`), turns a result into compact JSON text plus structured content, and turns every
`HubError` (and invalid arguments) into an `isError` result carrying the hub's error code.
"""

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ValidationError

from hub.operations import OPERATIONS
from hub.validation import invalid_params
from protocol.errors import HubError, Internal

from ..access import Access, HubCaller
from .schemas import compact_schema

log = logging.getLogger(__name__)

Body = Callable[..., Awaitable[BaseModel]]


@dataclass(frozen=True)
class ToolDef:
    name: str
    title: str
    description: str
    operations: tuple[str, ...]
    body: Body

    def annotations(self) -> ToolAnnotations:
        ops = [OPERATIONS[name] for name in self.operations]
        if all(op.read_only for op in ops):
            return ToolAnnotations(read_only_hint=True)
        return ToolAnnotations(  # readOnlyHint defaults to false
            destructive_hint=any(op.destructive for op in ops),
            idempotent_hint=all(op.idempotent for op in ops),
        )


@dataclass
class Toolset:
    """The tools of one concern, in the order they are listed."""

    tools: list[ToolDef] = field(default_factory=list)

    def tool(self, title: str, *, operations: tuple[str, ...]) -> Callable[[Body], Body]:
        def register(body: Body) -> Body:
            unknown = [name for name in operations if name not in OPERATIONS]
            if unknown:
                raise RuntimeError(f"tool {body.__name__} names unknown operations {unknown}")
            self.tools.append(
                ToolDef(body.__name__, title, " ".join((body.__doc__ or "").split()), operations, body)
            )
            return body

        return register


def error_result(error: HubError) -> CallToolResult:
    """An `isError` result carrying `{"error": {"code", "message", "details"}}` as JSON text.

    Text only: some clients (the MCP Inspector) check `structuredContent` against the tool's output
    schema even on error results, and an error is not the tool's output.
    """
    payload: dict[str, Any] = {"code": error.code.value, "message": error.message}
    if error.details:
        payload["details"] = error.details
    return CallToolResult(content=[TextContent(type="text", text=_json({"error": payload}))], is_error=True)


def success_result(result: BaseModel) -> CallToolResult:
    data = result.model_dump(mode="json", exclude_none=True)
    return CallToolResult(content=[TextContent(type="text", text=_json(data))], structured_content=data)


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


class HubTool(Tool):
    """A tool whose argument and unexpected failures also come back with a hub error code."""

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        try:
            return await super().run(arguments, context, convert_result)
        except UnexpectedToolError:
            # The tool boundary: a bug in a tool body. The model gets the code, the log gets the trace.
            log.exception("tool %s failed", self.name)
            return error_result(Internal("internal error"))
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                return error_result(invalid_params(exc.__cause__, f"arguments for {self.name}"))
            raise


def build_tool(definition: ToolDef, access: Access) -> Tool:
    """The SDK tool for `definition`, calling the hub as the caller of each request."""
    signature = inspect.signature(definition.body, eval_str=True)
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].annotation is not HubCaller:
        raise RuntimeError(f"tool {definition.name} must take `hub: HubCaller` first")

    async def run(**arguments: Any) -> CallToolResult:
        try:
            caller = await access.caller()
            caller.tool_called()
            return success_result(await definition.body(caller, **arguments))
        except HubError as error:
            return error_result(error)

    run.__name__ = definition.name
    run.__signature__ = signature.replace(parameters=parameters[1:])  # type: ignore[attr-defined]
    tool = HubTool.from_function(
        run, name=definition.name, title=definition.title, description=definition.description,
        annotations=definition.annotations(), structured_output=True,
    )
    tool.parameters = compact_schema(tool.parameters)
    if tool.fn_metadata.output_schema is not None:
        tool.fn_metadata.output_schema = compact_schema(tool.fn_metadata.output_schema)
    return tool
