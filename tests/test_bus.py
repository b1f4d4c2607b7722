"""The in-process event bus: routing by recipient, bounded buffers, and what overflow does."""

from datetime import UTC, datetime

import anyio
import pytest

from hub.bus import LocalEventBus, SubscriberLagged
from protocol.events import Event, EventType

pytestmark = pytest.mark.anyio


def _event(cursor: int) -> Event:
    return Event(cursor=cursor, type=EventType.READ_UPDATED, conversation_id="cnv_x", actor_id="agt_x",
                 at=datetime.now(UTC))


async def test_events_reach_only_their_recipients_subscriptions_in_order() -> None:
    bus = LocalEventBus(buffer_size=8)
    with bus.subscribe("alice") as alice, bus.subscribe("alice") as alice_again, bus.subscribe("bob") as bob:
        bus.publish([(_event(1), ("alice",)), (_event(2), ("alice", "bob")), (_event(3), ("carol",))])
        with anyio.fail_after(5):
            assert [(await alice.receive()).cursor for _ in range(2)] == [1, 2]
            assert [(await alice_again.receive()).cursor for _ in range(2)] == [1, 2]
            assert (await bob.receive()).cursor == 2
        assert bus.statistics().subscriptions == 3
    assert bus.statistics().subscriptions == 0


async def test_a_subscriber_that_overflows_its_buffer_lags_and_nobody_else_is_affected() -> None:
    bus = LocalEventBus(buffer_size=2)
    with bus.subscribe("slow") as slow, bus.subscribe("fast") as fast:
        for cursor in range(1, 6):
            bus.publish([(_event(cursor), ("slow", "fast"))])
            with anyio.fail_after(5):
                assert (await fast.receive()).cursor == cursor
        with pytest.raises(SubscriberLagged):
            await slow.receive()
        assert bus.statistics().lagged_total == 1
