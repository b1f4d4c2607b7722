"""The event bus: how committed events reach the live subscribers of the agents they are for.

The hub publishes each event once, right after the transaction that stored it commits, in cursor
order, with the ids of the agents it was delivered to. A subscription belongs to one agent (one per
live connection) and buffers at most `buffer_size` events. A subscriber that falls further behind
is not waited for, since one slow reader must never slow the writer or anyone else: its
subscription is marked lagging and ends, and the transport disconnects it, telling it to resume
from the last cursor it got. Nothing is lost by that: every event is in the store, and a resumed
stream replays it.

`LocalEventBus` serves one process and hands each subscription its events in cursor order.
`hub.cluster.RedisCluster` carries events between nodes behind the same methods; events from other
nodes can arrive late or out of order there, so it says `delivers_in_order = False` and its
subscribers treat each event as word that the store has news for them.
"""

from collections import deque
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.lowlevel

from protocol.events import Event


class SubscriberLagged(Exception):
    """The subscriber fell more than its buffer behind; it must resume from `last_cursor`."""

    def __init__(self, last_cursor: int | None = None) -> None:
        super().__init__(f"the subscriber fell behind; resume after cursor {last_cursor}")
        self.last_cursor = last_cursor


class Subscription(Protocol):
    agent_id: str

    async def receive(self) -> Event:
        """The next event published for this agent, in cursor order (`wait`, then `receive_nowait`).

        Raises:
            SubscriberLagged: the buffer overflowed; the subscription is over.
        """
        ...

    def receive_nowait(self) -> Event | None:
        """The next event published for this agent, in cursor order; None when none is buffered
        (or the subscription is over: `wait` says so)."""
        ...

    async def wait(self) -> None:
        """Return once `receive_nowait` has an event. Always yields to the event loop once.

        Raises:
            SubscriberLagged: the buffer overflowed; the subscription is over.
        """
        ...


class EventBus(Protocol):
    delivers_in_order: bool
    """True when every subscription receives its events in cursor order with none missing."""

    def publish(self, events: Collection[tuple[Event, Collection[str]]]) -> None:
        """Hand committed events, each with its recipients, to their subscribers. Never blocks."""
        ...

    def subscribe(self, agent_id: str) -> AbstractContextManager[Subscription]:
        """A subscription to `agent_id`'s events, live from now until the context exits."""
        ...


@dataclass(frozen=True)
class BusStatistics:
    subscriptions: int
    lagged_total: int
    published_total: int


class _LocalSubscription:
    """A bounded buffer with one reader. Lighter than a memory object stream, which matters at one
    subscription per connection and one offer per delivery: the publisher appends and wakes the
    reader if it waits; a reader that has events buffered takes them all without waiting."""

    def __init__(self, agent_id: str, buffer_size: int) -> None:
        self.agent_id = agent_id
        self.lagging = False
        self._limit = buffer_size
        self._buffer: deque[Event] = deque()
        self._wakeup: anyio.Event | None = None
        self._closed = False

    def offer(self, event: Event) -> bool:
        """Buffer `event`; False (and the subscription ends) when the buffer is full."""
        if self.lagging or self._closed:
            return True
        if len(self._buffer) >= self._limit:
            self.lagging = True
            # A lagging subscription ends at once rather than handing out a backlog it will not finish.
            self._buffer.clear()
        else:
            self._buffer.append(event)
        if self._wakeup is not None:
            self._wakeup.set()
        return not self.lagging

    async def receive(self) -> Event:
        await self.wait()
        return self._buffer.popleft()

    def receive_nowait(self) -> Event | None:
        return self._buffer.popleft() if self._buffer else None

    async def wait(self) -> None:
        if self._buffer or self.lagging:
            await anyio.lowlevel.checkpoint()
        while not self._buffer and not self.lagging:
            self._wakeup = anyio.Event()
            try:
                await self._wakeup.wait()
            finally:
                self._wakeup = None
        if self.lagging:
            raise SubscriberLagged()

    def close(self) -> None:
        self._closed = True
        self._buffer.clear()


class LocalEventBus:
    """The in-process bus: a bounded buffer per subscription."""

    delivers_in_order = True

    def __init__(self, buffer_size: int) -> None:
        self._buffer_size = buffer_size
        self._subscriptions: dict[str, set[_LocalSubscription]] = {}
        self._lagged = 0
        self._published = 0

    def publish(self, events: Collection[tuple[Event, Collection[str]]]) -> None:
        for event, recipients in events:
            self._published += 1
            for agent_id in recipients:
                for subscription in self._subscriptions.get(agent_id, ()):
                    if not subscription.offer(event):
                        self._lagged += 1

    @contextmanager
    def subscribe(self, agent_id: str) -> Iterator[Subscription]:
        subscription = _LocalSubscription(agent_id, self._buffer_size)
        self._subscriptions.setdefault(agent_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscription.close()
            peers = self._subscriptions[agent_id]
            peers.discard(subscription)
            if not peers:
                del self._subscriptions[agent_id]

    def statistics(self) -> BusStatistics:
        return BusStatistics(
            subscriptions=sum(len(s) for s in self._subscriptions.values()),
            lagged_total=self._lagged,
            published_total=self._published,
        )


class TappedBus:
    """A bus that also hands each committed batch to `tap` (webhooks fan out their owners' events so)."""

    def __init__(self, inner: EventBus, tap: Callable[[Collection[tuple[Event, Collection[str]]]], None]) -> None:
        self.inner = inner
        self.delivers_in_order = inner.delivers_in_order
        self._tap = tap

    def publish(self, events: Collection[tuple[Event, Collection[str]]]) -> None:
        self.inner.publish(events)
        self._tap(events)

    def subscribe(self, agent_id: str) -> AbstractContextManager[Subscription]:
        return self.inner.subscribe(agent_id)
