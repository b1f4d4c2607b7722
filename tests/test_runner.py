"""The runner's stand-ins for `asyncio.Queue` and `asyncio.Event` in uvicorn's WebSocket protocol
(`bridges.runner._Inbox`, `_Flag`): the behaviour uvicorn relies on, on an asyncio loop. And what a
serving process does with its heap once the hub runs (`bridges.app.settle_heap`)."""

import asyncio
import gc

from bridges.app import YOUNG_COLLECTION_THRESHOLD, settle_heap
from bridges.runner import _Flag, _Inbox


def test_settling_the_heap_collects_startup_garbage_freezes_the_rest_and_collects_young_ones_less_often() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    Cycle()  # garbage only a collection can free
    assert gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 1000
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])
        assert not any(isinstance(thing, Cycle) for thing in gc.get_objects(generation=2))
        gc.unfreeze()
        assert not any(isinstance(thing, Cycle) for thing in gc.get_objects())
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_the_inbox_hands_out_items_in_order_and_wakes_a_waiting_getter() -> None:
    async def main() -> None:
        inbox = _Inbox(asyncio.get_running_loop())
        assert inbox.empty()
        inbox.put_nowait(1)
        inbox.put_nowait(2)
        assert not inbox.empty()
        assert [await inbox.get(), await inbox.get()] == [1, 2]
        assert inbox.empty()
        waiting = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)
        assert not waiting.done()
        inbox.put_nowait(3)
        assert await waiting == 3
        assert inbox.empty()

    asyncio.run(main())


def test_a_getter_cancelled_after_its_wake_up_passes_the_item_to_the_next() -> None:
    async def main() -> None:
        inbox = _Inbox(asyncio.get_running_loop())
        first = asyncio.ensure_future(inbox.get())
        second = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)
        inbox.put_nowait("x")  # wakes `first`
        first.cancel()
        assert await second == "x"
        assert first.cancelled()

    asyncio.run(main())


def test_a_cancelled_getter_leaves_no_waiter_behind() -> None:
    async def main() -> None:
        inbox = _Inbox(asyncio.get_running_loop())
        getter = asyncio.ensure_future(inbox.get())
        await asyncio.sleep(0)
        getter.cancel()
        await asyncio.sleep(0)
        assert inbox._getters is None
        inbox.put_nowait("y")
        assert await inbox.get() == "y"

    asyncio.run(main())


def test_the_flag_starts_set_and_wakes_every_waiter_when_set_again() -> None:
    async def main() -> None:
        flag = _Flag(asyncio.get_running_loop())
        assert flag.is_set()
        assert await flag.wait()
        flag.clear()
        waiters = [asyncio.ensure_future(flag.wait()) for _ in range(2)]
        await asyncio.sleep(0)
        assert not any(waiter.done() for waiter in waiters)
        flag.set()
        assert await asyncio.gather(*waiters) == [True, True]
        cancelled = asyncio.ensure_future(_wait_cleared(flag))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        assert flag._waiters is None

    asyncio.run(main())


async def _wait_cleared(flag: _Flag) -> None:
    flag.clear()
    await flag.wait()
