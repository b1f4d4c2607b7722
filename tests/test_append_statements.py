"""`messages.append_message` and `events.append_event` write the same on both stores.

On PostgreSQL each is one statement with data-modifying `WITH` clauses (next seq + message + the
sender's read marker; event + deliveries + the conversation's activity, with the recipients read
there when a `MembersAsOf` names them), one round trip instead of three or four; on SQLite the
same parts run as separate statements. Nothing but these tests runs the two branches side by
side, so each checks the whole of what an append writes, on a real database of each kind, and that
a failed append writes nothing inside the savepoint the writer gives it.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from storage.migrations import upgrade
from storage.queries.conversations import MembersAsOf
from storage.queries.events import append_event, append_message_event
from storage.queries.messages import append_message
from storage.schema import (
    agents,
    blocks,
    conversation_members,
    conversations,
    deliveries,
    events,
    execution_nodes,
    executions,
    messages,
    workflows,
)
from storage.store import create_store_engine

START = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)
LATER = datetime(2026, 12, 6, 11, 15, 0, 654321, tzinfo=timezone(timedelta(hours=2)))
"""Not in UTC: the time must come back as the same instant on both stores."""


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """Agents a, b, c; conversations cv and cv2 (at seq 4, activity cursor 7), a and b members of both."""
    engine = create_store_engine(database_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(agents.insert(), [_agent(agent_id) for agent_id in "abc"])
        conn.execute(conversations.insert(), [
            {"id": conversation_id, "kind": "group", "title": None, "topic": None, "direct_key": None,
             "created_by": "a", "created_at": START, "updated_at": START, "last_seq": 4, "activity": 7,
             "last_activity_at": START}
            for conversation_id in ("cv", "cv2")])
        conn.execute(conversation_members.insert(), [
            _member(conversation_id, agent_id) for conversation_id in ("cv", "cv2") for agent_id in "ab"])
    yield engine
    engine.dispose()


def _agent(agent_id: str) -> dict[str, Any]:
    return {"id": agent_id, "handle": agent_id, "display_name": None, "description": None, "visibility": "public",
            "metadata": {}, "is_admin": False, "recovery_key_hash": "x", "credential_epoch": 0,
            "suspended_at": None, "suspended_reason": None, "created_at": START, "updated_at": START}


def _member(conversation_id: str, agent_id: str, *, joined_seq: int = 1, left_seq: int | None = None) -> dict[str, Any]:
    return {"conversation_id": conversation_id, "agent_id": agent_id, "role": "member", "joined_at": START,
            "joined_seq": joined_seq, "left_at": START if left_seq is not None else None, "left_seq": left_seq,
            "last_read_seq": 2}


def _message(message_id: str, **changes: Any) -> dict[str, Any]:
    """A message row with every column but `seq`, none at its default, so a column left out shows."""
    return {
        "id": message_id, "conversation_id": "cv", "kind": "message", "sender_id": "a",
        "content_type": "text/markdown", "body": "hello é", "metadata": {"n": 1, "nested": [None, {"x": "y"}]},
        "system": {"action": "renamed"}, "reply_to": "msg_earlier", "client_msg_id": f"key-{message_id}",
        "created_at": LATER, "edited_at": LATER + timedelta(seconds=1), "revision": 2,
        "deleted_at": LATER + timedelta(seconds=2), "attachments": [{"file_id": "f1", "name": "a.txt", "size": 3}],
        "request_hash": "ab" * 32, "version": 3, **changes,
    }


def _conversation(conn: Connection, conversation_id: str = "cv") -> dict[str, Any]:
    row = conn.execute(select(conversations.c.last_seq, conversations.c.activity, conversations.c.last_activity_at)
                       .where(conversations.c.id == conversation_id)).one()
    return dict(row._mapping)


def _read_markers(conn: Connection, conversation_id: str = "cv") -> dict[str, int]:
    return dict(conn.execute(select(conversation_members.c.agent_id, conversation_members.c.last_read_seq)
                             .where(conversation_members.c.conversation_id == conversation_id)).all())


def _messages(conn: Connection) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(select(messages).order_by(messages.c.seq)).mappings()]


def _delivered(conn: Connection) -> list[tuple[str, int]]:
    rows = conn.execute(select(deliveries.c.agent_id, deliveries.c.event_id)
                        .order_by(deliveries.c.event_id, deliveries.c.agent_id))
    return [(agent_id, event_id) for agent_id, event_id in rows]


def test_a_message_takes_the_conversations_next_seq_and_is_stored_with_every_column_given(engine: Engine) -> None:
    with engine.begin() as conn:
        first = append_message(conn, _message("m1"), read_by="a")
        second = append_message(conn, _message("m2", body=None, metadata=None, attachments=None), read_by="a")
        assert (first, second) == (5, 6)
        assert _conversation(conn)["last_seq"] == 6
        assert _conversation(conn, "cv2")["last_seq"] == 4
        assert _messages(conn) == [{**_message("m1"), "seq": 5},
                                   {**_message("m2", body=None, metadata=None, attachments=None), "seq": 6}]


def test_the_senders_read_marker_moves_up_to_the_seq_and_never_down(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(conversation_members.update().values(last_read_seq=9)
                     .where(conversation_members.c.conversation_id == "cv", conversation_members.c.agent_id == "b"))
        assert append_message(conn, _message("m1"), read_by="a") == 5
        assert _read_markers(conn) == {"a": 5, "b": 9}  # only the sender's, and only in this conversation
        assert _read_markers(conn, "cv2") == {"a": 2, "b": 2}
        assert append_message(conn, _message("m2", sender_id="b"), read_by="b") == 6
        assert _read_markers(conn) == {"a": 5, "b": 9}


@pytest.mark.parametrize("to", [[], ["b"], ["c", "a", "b"]])
def test_an_event_is_stored_and_delivered_once_to_each_agent_it_is_for(engine: Engine, to: list[str]) -> None:
    with engine.begin() as conn:
        conversation = _conversation(conn)
        cursor, delivered_to = append_event(conn, type="message.created", subject_id="m1",
                                            payload='{"k": [1, "é"]}', created_at=LATER, to=to)
        assert sorted(delivered_to) == sorted(to)
        stored = conn.execute(select(events)).mappings().one()
        assert dict(stored) == {"id": cursor, "type": "message.created", "subject_id": "m1",
                                "payload": {"k": [1, "é"]}, "created_at": LATER}
        assert _delivered(conn) == sorted((agent_id, cursor) for agent_id in to)
        assert _conversation(conn) == conversation  # no activity_of: not the conversation's activity


def test_an_event_becomes_the_activity_of_the_conversation_named_and_of_no_other(engine: Engine) -> None:
    with engine.begin() as conn:
        cursor, _ = append_event(conn, type="message.created", subject_id=None, payload="{}", created_at=LATER,
                                 to=["a"], activity_of="cv")
        assert _conversation(conn) == {"last_seq": 4, "activity": cursor, "last_activity_at": LATER}
        assert _conversation(conn, "cv2") == {"last_seq": 4, "activity": 7, "last_activity_at": START}
        assert _delivered(conn) == [("a", cursor)]


@pytest.mark.parametrize(("seq", "sender_id", "expected"), [
    (9, "a", ["a", "b", "c"]),  # every current member: c joined at 5, d left, e blocks the conversation
    (4, "a", ["a", "b"]),  # c joined after seq 4: it never saw that message
    (9, "b", ["a", "b"]),  # c blocks b: b's messages reach c no more
])
def test_an_event_for_the_members_as_of_a_seq_goes_to_who_saw_it_less_who_blocks(
    engine: Engine, seq: int, sender_id: str, expected: list[str]
) -> None:
    with engine.begin() as conn:
        conn.execute(agents.insert(), [_agent(agent_id) for agent_id in "de"])
        conn.execute(conversation_members.insert(), [
            _member("cv", "c", joined_seq=5), _member("cv", "d", left_seq=6), _member("cv", "e"),
            _member("cv2", "c")])
        conn.execute(blocks.insert(), [
            {"id": "bk1", "agent_id": "c", "blocked_agent_id": "b", "blocked_conversation_id": None,
             "created_at": START},
            {"id": "bk2", "agent_id": "e", "blocked_agent_id": None, "blocked_conversation_id": "cv",
             "created_at": START}])
        cursor, delivered_to = append_event(conn, type="message.created", subject_id="m1", payload="{}",
                                            created_at=LATER, to=MembersAsOf("cv", seq, sender_id), activity_of="cv")
        assert delivered_to == expected  # oldest id first, on both stores
        assert _delivered(conn) == [(agent_id, cursor) for agent_id in expected]
        assert _conversation(conn)["activity"] == cursor


def test_a_new_messages_event_also_finds_the_runs_whose_ask_it_answers(engine: Engine) -> None:
    """Runs of a workflow owned by c: r1 asked b, r2 asked anyone (but the owner), r3 asked b elsewhere, r4
    asked b and is no longer waiting."""
    with engine.begin() as conn:
        conn.execute(workflows.insert().values(id="wf", owner_id="c", name="wf", description="", version=1,
                                               created_at=START, updated_at=START))
        conn.execute(executions.insert(), [
            {"id": run_id, "workflow_id": "wf", "version": 1, "owner_id": "c", "status": "running",
             "trigger": "manual", "input": {}, "wake_seq": 0, "created_at": START, "deadline_at": LATER}
            for run_id in ("r1", "r2", "r3", "r4")])
        conn.execute(execution_nodes.insert(), [
            {"execution_id": run_id, "node_id": "ask", "status": status, "attempts": 1,
             "wait_conversation_id": conversation_id, "wait_agent_id": asked}
            for run_id, status, conversation_id, asked in (("r1", "waiting", "cv", "b"), ("r2", "waiting", "cv", None),
                                                           ("r3", "waiting", "cv2", "b"), ("r4", "done", "cv", "b"))])
        answered = {}
        for sender_id in "abc":
            cursor, delivered_to, waiting = append_message_event(
                conn, type="message.created", subject_id=f"m-{sender_id}", payload="{}", created_at=LATER,
                to=MembersAsOf("cv", 5, sender_id))
            assert delivered_to == ["a", "b"]
            assert _conversation(conn)["activity"] == cursor
            answered[sender_id] = sorted(waiting)
        assert answered == {"a": ["r2"], "b": ["r1", "r2"], "c": []}  # the owner answers no `ask` of its own


def test_a_duplicate_client_msg_id_raises_integrity_error_and_writes_nothing(engine: Engine) -> None:
    """What `messages.send` relies on to retry a send that lost a race: the error as SQLAlchemy's, and
    the savepoint the writer runs a failed write in, rolled back, leaving no trace of it."""
    with engine.connect() as conn, conn.begin():
        append_message(conn, _message("m1", client_msg_id="same"), read_by="a")
        before = (_conversation(conn), _read_markers(conn), _messages(conn))
        savepoint = conn.begin_nested()
        with pytest.raises(IntegrityError):
            append_message(conn, _message("m2", client_msg_id="same"), read_by="a")
        savepoint.rollback()
        assert (_conversation(conn), _read_markers(conn), _messages(conn)) == before
        assert append_message(conn, _message("m3"), read_by="a") == 6  # the seq it would have taken


def test_an_event_whose_delivery_fails_writes_nothing(engine: Engine) -> None:
    """An agent named twice: the deliveries' key refuses the second, and the event and activity go with it."""
    with engine.connect() as conn, conn.begin():
        before = _conversation(conn)
        savepoint = conn.begin_nested()
        with pytest.raises(IntegrityError):
            append_event(conn, type="message.created", subject_id=None, payload="{}", created_at=LATER,
                         to=["a", "b", "a"], activity_of="cv")
        savepoint.rollback()
        assert conn.execute(select(events.c.id)).all() == []
        assert _delivered(conn) == []
        assert _conversation(conn) == before
