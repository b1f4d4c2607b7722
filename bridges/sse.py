"""Live events over Server-Sent Events at /api/events/stream, for integrators and browsers.

Resumable: the stream starts after the `Last-Event-ID` header (what EventSource sends when it
reconnects) or the `after` query parameter; left out, it starts live now. Each event's SSE `id` is
its cursor, so a client that drops and reconnects gets every event once. A comment line goes out
every `sse_heartbeat_seconds` to keep proxies from closing an idle stream. A client that falls
further behind than the hub buffers gets a `lagged` event naming the cursor to resume after, and
the stream ends. The credential is checked again before every event: when it no longer holds
(revoked, suspended), an `error` event carries the hub's error and the stream ends.

The stream's errors before it starts (bad credential, bad cursor) are ordinary HTTP errors in the
hub's envelope; once the 200 is sent, the stream can only end.

One run of a workflow streams the same way (`POST /api/workflows/{id}/runs?stream=true`): the
subscription opens first, then the run starts (so none of its events can slip by), a `started`
event carries what `workflows.run` answered, then that run's `execution.*` and `node.*` events
follow, and the stream ends after the one that finishes it. It needs `workflows:read` beside
`workflows:run`. A retry with the `Idempotency-Key` of a run that has already ended has no events to
wait for: a `finished` event carries the run as `executions.get` answers it, and the stream ends.
"""

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from hub.bus import SubscriberLagged
from hub.core import Hub
from hub.principal import Principal
from protocol.errors import HubError, InvalidRequest
from protocol.events import Event, EventType
from protocol.workflows import FINISHED

from .credentials import address_of, principal_from
from .http_errors import error_response

RETRY_MILLISECONDS: Final = 2000
_CURSOR: Final = re.compile(r"[0-9]{1,20}")
"""An event cursor as `Last-Event-ID` or `after` gives it (beyond 64 bits, validation refuses it)."""


def _frame(fields: dict[str, Any]) -> bytes:
    return "".join(f"{name}: {value}\n" for name, value in fields.items()).encode() + b"\n"


RUN_ENDS: Final = frozenset({EventType.EXECUTION_COMPLETED, EventType.EXECUTION_FAILED,
                              EventType.EXECUTION_CANCELLED, EventType.EXECUTION_TIMED_OUT})


class EventStreamResponse:
    """The caller's events as SSE; or, with `start`, the events of what `start` began (see the module doc)."""

    def __init__(self, hub: Hub, request: Request,
                 start: Callable[[], Awaitable[dict[str, Any]]] | None = None, *, replayable: bool = False) -> None:
        """`replayable`: `start` may answer with a run started before (it was given an idempotency key)."""
        self._hub = hub
        self._request = request
        self._start = start
        self._replayable = replayable
        self._execution_id: str | None = None

    def _wanted(self, event: Event) -> bool:
        return self._start is None or (event.execution is not None and
                                       event.execution.execution_id == self._execution_id)

    def _last(self, event: Event) -> bool:
        return self._start is not None and event.type in RUN_ENDS

    def _params(self) -> dict[str, Any]:
        resume = self._request.headers.get("last-event-id") or self._request.query_params.get("after")
        if resume is None:
            return {}
        if not _CURSOR.fullmatch(resume):  # ASCII digits only: str.isdigit() takes "²", which int() refuses
            raise InvalidRequest("Last-Event-ID / after must be an event cursor", {"field": "after"})
        return {"after": int(resume)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            caller = await principal_from(self._hub, self._request.headers, address_of(self._request.client))
            stream = (self._hub.events_stream(caller, self._params()) if self._start is None
                      else self._hub.events_stream(caller, {}, checked_as="executions.get"))
            events = await stream.__aenter__()
        except HubError as error:
            await error_response(error)(scope, receive, send)
            return
        try:
            started = await self._start() if self._start is not None else None
        except HubError as error:
            with anyio.CancelScope(shield=True):
                await stream.__aexit__(None, None, None)
            await error_response(error)(scope, receive, send)
            return
        if started is not None:
            self._execution_id = started["execution_id"]
        try:
            await send({
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
                            (b"x-accel-buffering", b"no")],
            })
            await send({"type": "http.response.body", "body": _frame({"retry": RETRY_MILLISECONDS}), "more_body": True})
            if started is not None:
                await send({"type": "http.response.body", "more_body": True,
                            "body": _frame({"event": "started", "data": json.dumps(started)})})
                if self._replayable and (ended := await self._ended_run(caller)) is not None:
                    await send({"type": "http.response.body", "more_body": True,
                                "body": _frame({"event": "finished", "data": json.dumps(ended)})})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._until_disconnect, receive, tg)
                tg.start_soon(self._heartbeats, send)
                try:
                    async for event in events:
                        if not self._wanted(event):
                            continue
                        # Checked per event: a revoked key or a suspension ends the stream at once.
                        await principal_from(self._hub, self._request.headers, address_of(self._request.client))
                        body = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
                        await send({"type": "http.response.body", "more_body": True,
                                    "body": _frame({"id": event.cursor, "event": event.type, "data": body})})
                        if self._last(event):
                            break
                except SubscriberLagged as lag:
                    data = json.dumps({"resume_after": lag.last_cursor})
                    await send({"type": "http.response.body", "more_body": True,
                                "body": _frame({"event": "lagged", "data": data})})
                except HubError as error:
                    await send({"type": "http.response.body", "more_body": True,
                                "body": _frame({"event": "error", "data": json.dumps(error.to_dict())})})
                tg.cancel_scope.cancel()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-write
        finally:
            with anyio.CancelScope(shield=True):
                await stream.__aexit__(None, None, None)

    async def _ended_run(self, caller: Principal) -> dict[str, Any] | None:
        """The run being streamed, if it has already ended (a retry of a finished run): no event will come."""
        execution = await self._hub.dispatch(caller, "executions.get", {"execution_id": self._execution_id})
        return execution if execution["status"] in FINISHED else None

    async def _heartbeats(self, send: Send) -> None:
        while True:
            await anyio.sleep(self._hub.settings.sse_heartbeat_seconds)
            await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})

    @staticmethod
    async def _until_disconnect(receive: Receive, tg: anyio.abc.TaskGroup) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        tg.cancel_scope.cancel()


async def event_stream(request: Request) -> EventStreamResponse:
    return EventStreamResponse(request.state.hub, request)
