"""Following an agent's events through the hub (`events.list`), for waiting tools and for push.

Both paths to a hub (in process, or JSON-RPC to a remote one) offer the same `events.list` with a
`timeout` long poll, so one loop serves both: ask for the events after a cursor, waiting up to
`POLL_SECONDS` for one, and move the cursor on. In process the wait wakes on the hub's event bus
the moment an event for the agent commits. The credential is checked again on every poll, so a
revoked key ends a follower at its next poll.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio

from protocol.errors import Internal, InvalidRequest, RateLimited

from .access import HubCaller, HubLink

log = logging.getLogger(__name__)

POLL_SECONDS: Final = 25.0
"""The longest one `events.list` waits (the hub allows 30 s)."""
PAGE: Final = 200
BEYOND_ANY_CURSOR: Final = 2**53 - 1
BACKOFF_FIRST: Final = 0.5
BACKOFF_MAX: Final = 30.0

Events = list[dict[str, Any]]


async def head_cursor(hub: HubCaller) -> int:
    """The cursor of the newest event now: following from it sees exactly what happens from now on.

    The operation table has no "head" query; `events.list` refuses a cursor beyond the newest event
    with `invalid_request` and names the newest in `details.head`, which is what this reads.

    Raises:
        HubError: the caller may not read events.
    """
    try:
        await hub.call("events.list", {"after": BEYOND_ANY_CURSOR, "limit": 1})
    except InvalidRequest as error:
        head = error.details.get("head")
        if isinstance(head, int):
            return head
        raise
    raise Internal("the hub accepted an event cursor beyond its newest event")


async def next_events(hub: HubCaller, after: int, wait: float) -> tuple[Events, int]:
    """The caller's events after `after` (waiting up to `wait` s for one), and the cursor to go on from."""
    page = await hub.call("events.list", {"after": after, "timeout": round(min(wait, POLL_SECONDS), 3), "limit": PAGE})
    return page["items"], int(page["next_cursor"])


async def follow_events(
    link: HubLink, credential: Callable[[], str], after: int, on_events: Callable[[Events], Awaitable[None]]
) -> None:
    """Hand every event of the credential's agent after `after` to `on_events`, until cancelled.

    Transient failures (rate limits, a hub restarting or out of reach) are retried with backoff.

    Raises:
        Unauthorized, Forbidden: the credential was refused; following is over.
    """
    cursor = after
    backoff = BACKOFF_FIRST
    while True:
        try:
            caller = await link.connect(credential())
            events, cursor_next = await next_events(caller, cursor, POLL_SECONDS)
        except RateLimited as error:
            await anyio.sleep(error.retry_after)
            continue
        except Internal as error:
            log.warning("following events failed (%s); retrying in %.1fs", error.message, backoff)
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            continue
        backoff = BACKOFF_FIRST
        cursor = cursor_next
        if events:
            await on_events(events)
