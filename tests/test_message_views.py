"""The views of messages a node keeps (`hub.services.message_views`): served only for the row version
they were built from, and held within their memory bound, least recently used dropped first.

That a page shows every change through the hub, on one node or several, is tested end to end
(`test_messages`, `test_files`, `test_cluster`); these tests hold the bound itself."""

from datetime import UTC, datetime

from hub.services.message_views import MessageViews, _weight
from protocol.messages import Message


def message(n: int, body: str = "hello", **fields: object) -> Message:
    return Message.model_validate({
        "message_id": f"msg_{n:026d}", "conversation_id": "cnv_" + "0" * 26, "seq": n, "kind": "message",
        "sender_id": "agt_" + "0" * 26, "content_type": "text", "body": body, "metadata": {},
        "created_at": datetime.now(UTC), **fields,
    })


def test_a_view_is_served_for_the_version_it_was_built_from_and_no_other() -> None:
    views = MessageViews(1 << 20)
    first, edited = message(1, "draft"), message(1, "final", revision=1)
    views.keep([(0, first)])
    assert views.get([(first.message_id, 0), (first.message_id, 1), ("msg_" + "9" * 26, 0)]) == [first, None, None]
    views.keep([(1, edited)])
    assert views.get([(first.message_id, 0), (first.message_id, 1)]) == [None, edited]
    assert views.held_bytes == _weight(edited)
    assert (views.hits, views.misses) == (2, 3)


def test_views_stay_within_their_bound_least_recently_used_dropped_first() -> None:
    one = _weight(message(0))
    views = MessageViews(3 * one)
    kept = [message(n) for n in range(3)]
    views.keep((0, m) for m in kept)
    views.get([(kept[0].message_id, 0)])  # now the most recently used
    views.keep([(0, message(3))])
    assert views.get([(m.message_id, 0) for m in kept]) == [kept[0], None, kept[2]]
    assert views.held_bytes == 3 * one


def test_what_a_view_may_hold_counts_toward_the_bound() -> None:
    plain, heavy = message(1), message(2, "x" * 10_000, metadata={"k": "v"})
    assert _weight(heavy) >= _weight(plain) + 10_000 + 4096
    views = MessageViews(_weight(heavy) - 1)
    views.keep([(0, heavy), (0, plain)])  # too heavy to keep at all; the other fits
    assert views.get([(heavy.message_id, 0), (plain.message_id, 0)]) == [None, plain]


def test_a_bound_of_zero_keeps_nothing() -> None:
    views = MessageViews(0)
    views.keep([(0, message(1))])
    assert views.get([(message(1).message_id, 0)]) == [None] and views.held_bytes == 0
