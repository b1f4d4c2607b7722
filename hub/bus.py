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

from collections.abc import Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from protocol.events import Event


class SubscriberLagged(Exception):
    """The subscriber fell more than its buffer behind; it must resume from `last_cursor`."""

    def __init__(self, last_cursor: int | None = None) -> None:
        super().__init__(f"the subscriber fell behind; resume after cursor {last_cursor}")
        self.last_cursor = last_cursor


class Subscription(Protocol):
    agent_id: str

    async def receive(self) -> Event:
        """The next event published for this agent, in cursor order.

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
    def __init__(self, agent_id: str, buffer_size: int) -> None:
        self.agent_id = agent_id
        self.lagging = False
        self._send: MemoryObjectSendStream[Event]
        self._receive: MemoryObjectReceiveStream[Event]
        self._send, self._receive = anyio.create_memory_object_stream[Event](max_buffer_size=buffer_size)

    def offer(self, event: Event) -> bool:
        """Buffer `event`; False (and the subscription ends) when the buffer is full."""
        if self.lagging:
            return True
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.lagging = True
            self._send.close()
            return False
        except anyio.BrokenResourceError:  # the subscriber has gone
            pass
        return True

    async def receive(self) -> Event:
        # A lagging subscription ends at once rather than handing out a backlog it will not finish.
        if self.lagging:
            raise SubscriberLagged()
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            raise SubscriberLagged() from None

    def close(self) -> None:
        self._send.close()
        self._receive.close()


class LocalEventBus:
    """The in-process bus: a bounded memory stream per subscription."""

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
