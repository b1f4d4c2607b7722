"""An agent's events: a page after a cursor (optionally waiting for one), or a live stream.

The live stream is the replay-to-live handoff of docs/design.md §9, done in this order so nothing
falls in between: subscribe to the bus first (events committed from then on are buffered), replay
from the store everything after the client's cursor (until a page comes back short: that was the end
of the store, and whatever was committed after it is on the bus), then hand out the buffered and
live events, skipping any the replay already returned (cursors only grow, so "skip up to the last
cursor handed out" is exact). Each event is handed out once, in cursor order, with no gap.

On a bus that does not deliver in order (several nodes), an event newer than the last one handed
out only says the store has news: the stream reads the store again, which has every committed
event in cursor order (docs/design.md §9), instead of trusting the bus's order.
"""

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio
import anyio.lowlevel
from sqlalchemy import Connection

from protocol.errors import InvalidRequest
from protocol.events import Event, EventPage, ListEventsParams
from storage.queries import events as event_queries
from storage.store import Store

from ..bus import EventBus, SubscriberLagged, Subscription
from .timeline import event_of

REPLAY_PAGE: Final = 200


def _read_page(conn: Connection, agent_id: str, after: int, limit: int) -> list[Event]:
    return [event_of(row) for row in event_queries.list_for_agent(conn, agent_id, after=after, limit=limit)]


def _check_cursor(conn: Connection, after: int) -> None:
    head = event_queries.head(conn)
    if after > head:
        # A cursor from the future: another hub's, or this one's before its store was reset.
        raise InvalidRequest(f"cursor {after} is beyond the newest event ({head})", {"field": "after", "head": head})


class EventStream:
    """One agent's events after a cursor: replayed from the store, then live from the bus.

    Iterating raises `SubscriberLagged` (with the last cursor handed out) when the subscriber fell
    further behind than the bus buffers; it should resume from that cursor. `next_batch` hands out
    what is ready in one go, for a transport that writes several events per wake-up.
    """

    def __init__(
        self, store: Store, subscription: Subscription, agent_id: str, after: int, *, bus_in_order: bool
    ) -> None:
        self.start = after
        self.position = after
        """The cursor of the last event handed out."""
        self._store = store
        self._subscription = subscription
        self._agent_id = agent_id
        self._replaying = True
        """The next events come from the store (`_page`), not from the bus."""
        self._bus_in_order = bus_in_order
        self._page: deque[Event] = deque()

    def __aiter__(self) -> "EventStream":
        return self

    async def __anext__(self) -> Event:
        """The next event, waiting for it. Yields to the event loop once even when one is ready, so a
        busy stream lets other tasks run."""
        if (event := self.next_ready()) is not None:
            # Not cancellable here: an event taken but never returned would leave `position` past it.
            await anyio.lowlevel.cancel_shielded_checkpoint()
            return event
        while (event := self.next_ready()) is None:
            await self._wait()
        return event

    async def next_batch(self, limit: int) -> list[Event]:
        """The next event (waiting for it) and up to `limit - 1` more that are ready, in order."""
        batch = [await self.__anext__()]
        while len(batch) < limit and (event := self.next_ready()) is not None:
            batch.append(event)
        return batch

    def next_ready(self) -> Event | None:
        """The next event if it can be handed out without waiting, else None."""
        if self._page:
            return self._hand_out(self._page.popleft())
        if self._replaying:
            return None
        while (event := self._subscription.receive_nowait()) is not None:
            if event.cursor <= self.position:
                continue  # the replay returned it already
            if not self._bus_in_order:
                self._replaying = True  # an event from another node may precede it: read the store
                return None
            return self._hand_out(event)
        return None

    def _hand_out(self, event: Event) -> Event:
        self.position = event.cursor
        return event

    async def _wait(self) -> None:
        """Read the next page of the replay, or wait for the bus."""
        if self._replaying:
            page = await self._store.read(self._replay_page, bounded=True)
            self._page.extend(page)
            # A short page is the end of the store when it was read; anything committed later was
            # committed after subscribing, so the bus has it. (Waiting for an empty page instead
            # would chase the store for as long as events keep coming.)
            self._replaying = len(page) == REPLAY_PAGE
            return
        try:
            await self._subscription.wait()
        except SubscriberLagged:
            raise SubscriberLagged(self.position) from None

    def _replay_page(self, conn: Connection) -> list[Event]:
        return _read_page(conn, self._agent_id, self.position, REPLAY_PAGE)


class EventService:
    def __init__(self, store: Store, bus: EventBus) -> None:
        self._store = store
        self._bus = bus

    async def list_events(self, caller_id: str, params: ListEventsParams) -> EventPage:
        """The caller's events after `params.after`; with `timeout`, block until one comes (or the time is up)."""

        def read(conn: Connection) -> list[Event]:
            _check_cursor(conn, params.after)
            return _read_page(conn, caller_id, params.after, params.limit + 1)

        if params.timeout <= 0:
            return self._page(await self._store.read(read, bounded=True), params)
        # Subscribed before the first read, so an event committed in between still wakes us.
        with self._bus.subscribe(caller_id) as subscription:
            events = await self._store.read(read, bounded=True)
            if not events:
                with anyio.move_on_after(params.timeout):
                    try:
                        await subscription.receive()
                    except SubscriberLagged:
                        pass  # plenty arrived; the read below gets them
                events = await self._store.read(read, bounded=True)
        return self._page(events, params)

    @staticmethod
    def _page(events: list[Event], params: ListEventsParams) -> EventPage:
        more = len(events) > params.limit
        events = events[: params.limit]
        return EventPage(items=events, next_cursor=events[-1].cursor if events else params.after, has_more=more)

    @asynccontextmanager
    async def stream(self, caller_id: str, after: int | None) -> AsyncIterator[EventStream]:
        """A live stream of the caller's events after `after` (None: from now on).

        Raises:
            InvalidRequest: `after` is beyond the newest event.
        """
        with self._bus.subscribe(caller_id) as subscription:

            def start(conn: Connection) -> int:
                if after is None:
                    return event_queries.head(conn)
                _check_cursor(conn, after)
                return after

            yield EventStream(self._store, subscription, caller_id, await self._store.read(start, bounded=True),
                              bus_in_order=self._bus.delivers_in_order)
