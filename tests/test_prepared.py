"""Prepared statements (`storage/queries/_prepared.py`) return what `Connection.execute` returns.

They skip SQLAlchemy's execution path but not its compiler: the same SQL, the same bind processing,
and for `mapping`/`mappings` the same result processing (UTC datetimes, JSON, NULLs). An `IN` list is
rendered by SQLAlchemy for each length it is given. Each test runs a statement both ways, on both
stores, against rows with every kind of value the schema holds.
"""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, String, bindparam, create_engine, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from storage.migrations import upgrade
from storage.queries._prepared import Prepared, PreparedUpsert
from storage.schema import EncodedJson, agents, conversation_members, conversations, messages
from storage.store import create_store_engine

START = datetime(2026, 12, 5, 9, 30, 0, 123456, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_store_engine(database_url)
    upgrade(engine)
    with engine.begin() as conn:
        _fill(conn)
    yield engine
    engine.dispose()


def _fill(conn: Connection) -> None:
    """Two agents, three direct conversations, messages with JSON, NULLs and datetimes."""
    conn.execute(agents.insert(), [_agent(f"ag{n}") for n in range(2)])
    for c in range(3):
        conn.execute(conversations.insert().values(
            id=f"cv{c}", kind="direct", direct_key=f"ag0:ag1:{c}", created_by="ag0", created_at=START,
            updated_at=START, last_seq=4, activity=c, last_activity_at=START + timedelta(seconds=c)))
        conn.execute(conversation_members.insert(), [
            {"conversation_id": f"cv{c}", "agent_id": f"ag{n}", "role": "member", "joined_at": START,
             "joined_seq": 1, "left_at": START if n and c == 2 else None, "left_seq": None, "last_read_seq": 0}
            for n in range(2)])
        conn.execute(messages.insert(), [_message(c, seq) for seq in range(1, 5)])


def _agent(agent_id: str) -> dict[str, Any]:
    return {"id": agent_id, "handle": f"handle-{agent_id}", "display_name": None, "description": None,
            "visibility": "public", "metadata": {}, "is_admin": False, "recovery_key_hash": "x",
            "credential_epoch": 0, "suspended_at": None, "suspended_reason": None, "created_at": START,
            "updated_at": START}


def _message(conversation: int, seq: int) -> dict[str, Any]:
    return {
        "id": f"m{conversation}-{seq}", "conversation_id": f"cv{conversation}", "seq": seq, "kind": "message",
        "sender_id": f"ag{seq % 2}", "content_type": "text/plain", "body": None if seq == 3 else f"body {seq} é",
        "metadata": {"n": seq, "nested": [1, {"a": None}]} if seq % 2 else None, "system": None,
        "reply_to": None, "client_msg_id": None, "created_at": START + timedelta(microseconds=seq),
        "edited_at": START if seq == 2 else None, "revision": 0, "deleted_at": None,
        "attachments": [{"file_id": "f1", "name": "a.txt", "size": 3}] if seq == 4 else None,
        "request_hash": None, "version": 0,
    }


def _both_ways(engine: Engine, statement: Any, params: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    with engine.connect() as conn, conn.begin():
        executed = [dict(row) for row in conn.execute(statement, params).mappings()]
        prepared = Prepared(statement).mappings(conn, params)
    return executed, prepared


def test_rows_come_back_processed_as_connection_execute_gives_them(engine: Engine) -> None:
    statement = select(messages).where(messages.c.conversation_id == bindparam("c")).order_by(messages.c.seq)
    executed, prepared = _both_ways(engine, statement, {"c": "cv1"})
    assert len(prepared) == 4
    assert prepared == executed
    assert prepared[0]["created_at"] == START + timedelta(microseconds=1)
    assert prepared[0]["created_at"].tzinfo is not None
    assert prepared[0]["metadata"] == {"n": 1, "nested": [1, {"a": None}]}
    assert prepared[3]["attachments"] == [{"file_id": "f1", "name": "a.txt", "size": 3}]
    assert prepared[2]["body"] is None


def test_a_join_keys_its_columns_as_connection_execute_does(engine: Engine) -> None:
    statement = (select(conversation_members, agents.c.handle)
                 .join(agents, agents.c.id == conversation_members.c.agent_id)
                 .where(conversation_members.c.conversation_id == bindparam("c"))
                 .order_by(conversation_members.c.agent_id))
    executed, prepared = _both_ways(engine, statement, {"c": "cv2"})
    assert prepared == executed
    assert [row["handle"] for row in prepared] == ["handle-ag0", "handle-ag1"]
    assert prepared[1]["left_at"] == START


@pytest.mark.parametrize("ids", [[], ["cv0"], ["cv2", "cv0"], ["cv0", "cv1", "cv2", "nope"]])
def test_an_in_list_of_any_length(engine: Engine, ids: list[str]) -> None:
    statement = (select(conversations.c.id, conversations.c.last_activity_at)
                 .where(conversations.c.id.in_(bindparam("ids", expanding=True)),
                        conversations.c.activity >= bindparam("floor"))
                 .order_by(conversations.c.id))
    executed, prepared = _both_ways(engine, statement, {"ids": ids, "floor": 0})
    assert prepared == executed
    assert [row["id"] for row in prepared] == sorted(set(ids) - {"nope"})


def test_lists_of_different_lengths_share_one_prepared_statement(engine: Engine) -> None:
    """Each length is compiled once and kept: a second call of a length gives the same as the first."""
    prepared = Prepared(select(conversations.c.id).where(conversations.c.id.in_(bindparam("ids", expanding=True)))
                        .order_by(conversations.c.id))
    with engine.connect() as conn, conn.begin():
        for ids in (["cv0", "cv1"], ["cv2"], ["cv1", "cv2"], ["cv0"]):
            assert prepared.column(conn, {"ids": ids}) == sorted(ids)


def test_a_failing_statement_raises_as_connection_execute_would(engine: Engine) -> None:
    insert = Prepared(conversation_members.insert(),
                      column_keys=[column.key for column in conversation_members.columns])
    duplicate = {"conversation_id": "cv0", "agent_id": "ag0", "role": "member", "joined_at": START,
                 "joined_seq": 1, "left_at": None, "left_seq": None, "last_read_seq": 0}
    with engine.connect() as conn, conn.begin(), pytest.raises(IntegrityError):
        insert.execute(conn, duplicate)


def test_times_and_json_nulls_are_written_as_connection_execute_writes_them(engine: Engine) -> None:
    """The SQLite time text keeps the last time it wrote (a send binds one `now` three times), and JSON
    None is written without `json.dumps`: what is stored is what `Connection.execute` stores, for the
    same time again, an equal time in another zone, a different time, and None in between."""
    insert = Prepared(messages.insert(), column_keys=[column.key for column in messages.columns])
    elsewhere = START.astimezone(timezone(timedelta(hours=-5)))
    times = [START, START, elsewhere, START + timedelta(seconds=1), None, START]
    with engine.connect() as conn, conn.begin():
        for n, at in enumerate(times):
            row = {**_message(0, 10 + 2 * n), "edited_at": at, "metadata": None}
            insert.execute(conn, row).close()
            conn.execute(messages.insert(), {**row, "id": f"{row['id']}-x", "seq": row["seq"] + 1})
        stored = conn.execute(select(messages.c.id, messages.c.edited_at, messages.c.metadata)
                              .where(messages.c.seq >= 10).order_by(messages.c.seq)).all()
        as_text = conn.execute(select(messages.c.edited_at.cast(String), messages.c.metadata.cast(String))
                               .where(messages.c.seq >= 10).order_by(messages.c.seq)).all()
    assert [at for _, at, _ in stored] == [at for at in times for _ in range(2)]
    assert as_text[0::2] == as_text[1::2]  # prepared, then Connection.execute: the same text
    assert {metadata for _, _, metadata in stored} == {None}


def test_each_engine_writes_json_with_its_own_serializer(engine: Engine, database_url: str) -> None:
    """A statement is compiled once per engine, not per kind of database: its JSON processors carry the
    engine's serializer. An engine made without the store's settings (a script's, a test's) that runs
    a statement first must not change how the store's engine writes `EncodedJson` (as it is)."""
    insert = Prepared(messages.insert(), column_keys=[column.key for column in messages.columns])
    plain = create_engine(database_url)
    try:
        with plain.begin() as conn:
            insert.execute(conn, {**_message(0, 20), "metadata": {"by": "plain"}}).close()
    finally:
        plain.dispose()
    with engine.begin() as conn:
        insert.execute(conn, {**_message(0, 21), "metadata": EncodedJson('{"by":"store"}')}).close()
        stored = conn.execute(select(messages.c.metadata).where(messages.c.seq >= 20).order_by(messages.c.seq))
        assert list(stored.scalars()) == [{"by": "plain"}, {"by": "store"}]


def test_an_upsert_returns_its_row_as_connection_execute_does(engine: Engine) -> None:
    """`PreparedUpsert` runs each dialect's own `INSERT … ON CONFLICT`; what it returns comes back by
    column key and processed (a UTC datetime, given in another zone and bound in `SET` too), for the
    insert and for the update on conflict, one row at a time or many."""
    at = bindparam("at", type_=conversations.c.updated_at.type)

    def build(insert: Any) -> Any:
        statement = insert(conversations).values(
            id=bindparam("id"), kind="group", direct_key=None, created_by="ag0", created_at=START, updated_at=at,
            last_seq=0, activity=0, last_activity_at=START)
        return (statement.on_conflict_do_update(index_elements=[conversations.c.id],
                                                set_={"updated_at": at, "last_seq": conversations.c.last_seq + 1})
                .returning(conversations.c.id, conversations.c.updated_at, conversations.c.last_seq))

    upsert = PreparedUpsert(build)
    later = (START + timedelta(hours=1)).astimezone(timezone(timedelta(hours=-5)))
    with engine.connect() as conn, conn.begin():
        built = build(postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert)
        prepared = [upsert.on(conn).mapping(conn, {"id": id, "at": later}) for id in ("cv9", "cv0")]
        executed = [dict(conn.execute(built, {"id": id, "at": later}).mappings().one()) for id in ("cv8", "cv1")]
        upsert.on(conn).execute_many(conn, [{"id": "cv7", "at": later}, {"id": "cv2", "at": later}])
        many = conn.execute(select(conversations.c.id, conversations.c.last_seq)
                            .where(conversations.c.id.in_(["cv7", "cv2"])).order_by(conversations.c.id)).all()
    assert prepared[0] == {"id": "cv9", "updated_at": later, "last_seq": 0}  # inserted
    assert prepared[1] == {"id": "cv0", "updated_at": later, "last_seq": 5}  # updated: it had 4
    assert [row["updated_at"].utcoffset() for row in prepared] == [timedelta(0)] * 2  # as stored: in UTC
    assert [{**row, "id": None} for row in prepared] == [{**row, "id": None} for row in executed]
    assert many == [("cv2", 5), ("cv7", 0)]
