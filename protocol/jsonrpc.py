"""The JSON-RPC 2.0 envelope and its error-code allocation.

Codes: the spec's own (-32700 parse error, -32600 invalid request, -32601 method not found,
-32602 invalid params, -32603 internal error); hub errors use -32001..-32099 (see
`protocol.errors`). Every error object carries the hub's string code in `error.data.code`.
"""

from typing import Any, Final

from .errors import HubError

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600

VERSION: Final = "2.0"

RequestId = str | int | None


def success(request_id: RequestId, result: Any) -> dict[str, Any]:
    return {"jsonrpc": VERSION, "id": request_id, "result": result}


def failure(request_id: RequestId, error: HubError) -> dict[str, Any]:
    data = error.to_dict()
    return {
        "jsonrpc": VERSION,
        "id": request_id,
        "error": {"code": error.jsonrpc_code, "message": error.message, "data": data},
    }


def envelope_error(request_id: RequestId, jsonrpc_code: int, error: HubError) -> dict[str, Any]:
    """An error for a frame that never reached an operation (parse error, malformed request)."""
    response = failure(request_id, error)
    response["error"]["code"] = jsonrpc_code
    return response


def notification(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": VERSION, "method": method, "params": params}
