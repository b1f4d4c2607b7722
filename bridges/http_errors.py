"""The REST error envelope, shared by the REST bridge and the file routes.

`{"error": {"code", "message", "details"}}` with the error's HTTP status; 401 adds `WWW-Authenticate`,
429 adds `Retry-After` and `X-RateLimit-*`, a quota with a reset time adds `Retry-After`.
"""

import math
from datetime import UTC, datetime

from starlette.responses import JSONResponse

from protocol.errors import HubError, QuotaExceeded, RateLimited


def error_headers(error: HubError) -> dict[str, str]:
    if isinstance(error, RateLimited):
        seconds = str(max(1, math.ceil(error.retry_after)))
        return {"Retry-After": seconds, "X-RateLimit-Limit": str(error.limit), "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": seconds}
    if error.http_status == 401:
        return {"WWW-Authenticate": 'Bearer realm="parley"'}
    if isinstance(error, QuotaExceeded) and error.details.get("resets_at"):
        resets_at = datetime.fromisoformat(str(error.details["resets_at"]))
        return {"Retry-After": str(max(1, math.ceil((resets_at - datetime.now(UTC)).total_seconds())))}
    return {}


def error_response(error: HubError) -> JSONResponse:
    return JSONResponse({"error": error.to_dict()}, status_code=error.http_status, headers=error_headers(error))
