"""Refuse HTTP requests whose body framing two servers could read differently (request smuggling).

A request with both `Content-Length` and `Transfer-Encoding`, with `Content-Length` given twice, or
with a transfer coding other than `chunked` alone, can be cut into requests one way by a proxy in
front of the hub and another way by the hub (RFC 9112 section 6.3). h11, under hypercorn, reads such
a request by its `Transfer-Encoding` and keeps the connection open, so bytes a proxy sent as part of
one body would run as a request of their own. The hub answers 400 and closes the connection, so
nothing after the ambiguous request is read at all.

A response that starts before its request's body has been read whole (a 404, 405 or 401 decided
from the head alone) also says `Connection: close`. The connection cannot carry another request
until the rest of the body is read, and no server reads it for the app: hypercorn closes such a
connection once the response is sent, without saying so, and a client that sent its next request
on it in that moment saw "disconnected without a response".
"""

import json
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.errors import InvalidRequest

CONTENT_LENGTH: Final = b"content-length"
TRANSFER_ENCODING: Final = b"transfer-encoding"
CLOSE: Final = (b"connection", b"close")


def ambiguity(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why these request headers frame the body ambiguously, or None when they do not."""
    lengths = [value for name, value in headers if name.lower() == CONTENT_LENGTH]
    codings = [value for name, value in headers if name.lower() == TRANSFER_ENCODING]
    if lengths and codings:
        return "a request may not carry both Content-Length and Transfer-Encoding"
    if len(lengths) > 1:
        return "a request may carry one Content-Length"
    if codings and [coding.strip().lower() for coding in codings] != [b"chunked"]:
        return "the only transfer coding accepted is chunked"
    return None


class RefuseAmbiguousFraming:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (reason := ambiguity(scope["headers"])) is not None:
            body = json.dumps({"error": InvalidRequest(reason).to_dict()}).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()), CLOSE]})
            await send({"type": "http.response.body", "body": body})
            return
        await self._app(scope, receive, send)


def declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request with these headers has a body to read (RFC 9112 section 6.3)."""
    return any(name.lower() == TRANSFER_ENCODING or (name.lower() == CONTENT_LENGTH and value.strip() != b"0")
               for name, value in headers)


class CloseWhenBodyUnread:
    """Answer `Connection: close` when the response starts before the request's body was read whole."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not declares_body(scope["headers"]):
            await self._app(scope, receive, send)
            return
        body_read = False

        async def receive_noting_the_end() -> Message:
            nonlocal body_read
            message = await receive()
            body_read = body_read or not message.get("more_body", False)
            return message

        async def send_closing_if_unread(message: Message) -> None:
            if message["type"] == "http.response.start" and not body_read:
                message = {**message, "headers": [*message.get("headers", []), CLOSE]}
            await send(message)

        await self._app(scope, receive_noting_the_end, send_closing_if_unread)
