"""The one error family of the hub, shared by the hub, every transport and the Python client.

    HubError                      code               HTTP  JSON-RPC
     ├── InvalidRequest           invalid_request    400   -32602
     ├── Unauthorized             unauthorized       401   -32001
     ├── Forbidden                forbidden          403   -32003
     ├── NotFound                 not_found          404   -32004
     ├── MethodNotFound           method_not_found   404   -32601
 ├── MethodNotAllowed         method_not_allowed 405   (REST only: a path without that HTTP method)
     ├── Conflict                 conflict           409   -32009
     ├── Blocked                  blocked            403   -32010
     ├── PayloadTooLarge          payload_too_large  413   -32013
     ├── UnsupportedMediaType     unsupported_media  415   -32015
     ├── RateLimited              rate_limited       429   -32029
 ├── QuotaExceeded            quota_exceeded     403   -32030
     └── Internal                 internal           500   -32603

Each class carries its code and statuses, so the per-transport tables are derived, never kept by
hand. `details` is client-meaningful data (field errors, limits); nothing internal goes in it.
"""

from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_FOUND = "method_not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    BLOCKED = "blocked"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    INTERNAL = "internal"


class HubError(Exception):
    """A failure the client should see: a stable `code`, a human `message`, optional `details`."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    http_status: ClassVar[int] = 500
    jsonrpc_code: ClassVar[int] = -32603

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        """The `{"code", "message", "details"}` body of the error envelope."""
        return {"code": self.code.value, "message": self.message, "details": self.details}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "HubError":
        """Rebuild the typed error a peer sent (used by the Python client)."""
        cls = _BY_CODE.get(str(data.get("code")), Internal)
        details = data.get("details") or {}
        message = str(data.get("message", ""))
        if cls is RateLimited:
            return RateLimited(message, retry_after=float(details.get("retry_after", 1.0)))
        if cls is QuotaExceeded:
            return QuotaExceeded(message, quota=str(details.get("quota", "")), limit=int(details.get("limit", 0)),
                                 used=int(details.get("used", 0)), resets_at=details.get("resets_at"))
        return cls(message, details)


class InvalidRequest(HubError):
    code = ErrorCode.INVALID_REQUEST
    http_status = 400
    jsonrpc_code = -32602


class Unauthorized(HubError):
    code = ErrorCode.UNAUTHORIZED
    http_status = 401
    jsonrpc_code = -32001


class Forbidden(HubError):
    code = ErrorCode.FORBIDDEN
    http_status = 403
    jsonrpc_code = -32003


class NotFound(HubError):
    code = ErrorCode.NOT_FOUND
    http_status = 404
    jsonrpc_code = -32004


class MethodNotFound(HubError):
    code = ErrorCode.METHOD_NOT_FOUND
    http_status = 404
    jsonrpc_code = -32601


class MethodNotAllowed(HubError):
    """REST only: the path exists, not with this HTTP method (the response's `Allow` lists those it has)."""

    code = ErrorCode.METHOD_NOT_ALLOWED
    http_status = 405
    jsonrpc_code = -32601


class Conflict(HubError):
    code = ErrorCode.CONFLICT
    http_status = 409
    jsonrpc_code = -32009


class Blocked(HubError):
    code = ErrorCode.BLOCKED
    http_status = 403
    jsonrpc_code = -32010


class PayloadTooLarge(HubError):
    code = ErrorCode.PAYLOAD_TOO_LARGE
    http_status = 413
    jsonrpc_code = -32013


class UnsupportedMediaType(HubError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE
    http_status = 415
    jsonrpc_code = -32015


class RateLimited(HubError):
    """Too many requests; `retry_after` (seconds) says when the next one may succeed."""

    code = ErrorCode.RATE_LIMITED
    http_status = 429
    jsonrpc_code = -32029

    def __init__(self, message: str, *, retry_after: float, limit: int = 0) -> None:
        super().__init__(message, {"retry_after": round(retry_after, 3), "limit": limit})
        self.retry_after = retry_after
        self.limit = limit


class QuotaExceeded(HubError):
    """Over a quota: storage (which frees up only when something is removed) or a daily allowance (which
    resets at `resets_at`). Nothing was written."""

    code = ErrorCode.QUOTA_EXCEEDED
    http_status = 403
    jsonrpc_code = -32030

    def __init__(self, message: str, *, quota: str, limit: int, used: int, resets_at: str | None = None) -> None:
        super().__init__(message, {"quota": quota, "limit": limit, "used": used, "resets_at": resets_at})


class Internal(HubError):
    code = ErrorCode.INTERNAL
    http_status = 500
    jsonrpc_code = -32603


_BY_CODE: dict[str, type[HubError]] = {cls.code.value: cls for cls in HubError.__subclasses__()}


class ErrorBody(BaseModel):
    code: ErrorCode
    message: str
    details: dict[str, Any]


class ErrorEnvelope(BaseModel):
    """The REST error body: `{"error": {"code", "message", "details"}}`."""

    error: ErrorBody
