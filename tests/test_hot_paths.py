"""The hub's busiest operations build no SQL statement at run time, and on SQLite read where they run.

A statement SQLAlchemy builds on every call costs more Python than the database then takes to run it:
one such check, added with workflows, made sending twice as slow before a benchmark noticed, and
`conversations.get` (every MCP `read_messages`) built its member list afresh each time
(bench/RESULTS.md). Hot statements are prepared (`storage/queries/_prepared.py`, run on the DBAPI
cursor) or built once at import. These tests run each operation twice and check that every statement
the second round passes to `Connection.execute` is one the first round ran.

On SQLite the hot reads are `bounded` (`Store.read`): they run in the event loop's thread, because a
hop to a worker thread and back cost more than the read (40% of the hub's CPU on a REST page).
"""

import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event

from hub.operations import OPERATIONS
from storage.store import Store

from .inprocess import LocalAgent, LocalHub, local_hub

pytestmark = pytest.mark.anyio


@contextmanager
def executed_statements(engine: Engine, *, only: Callable[[], bool] = lambda: True) -> Iterator[list[Any]]:
    """The statement objects passed to `Connection.execute` meanwhile (kept alive, so no two share an id)."""
    executed: list[Any] = []

    def record(_conn: Connection, statement: Any, *_args: Any) -> None:
        if only():
            executed.append(statement)

    event.listen(engine, "before_execute", record)
    try:
        yield executed
    finally:
        event.remove(engine, "before_execute", record)


async def built_again(engine: Engine, round_: Callable[[int], Awaitable[None]], *,
                      only: Callable[[], bool] = lambda: True) -> list[str]:
    """The first lines of the statements round 2 ran that round 1 did not run (by identity)."""
    rounds = []
    for number in (1, 2):
        with executed_statements(engine, only=only) as executed:
            await round_(number)
        rounds.append(executed)
    first, second = rounds
    return [str(statement).split("\n")[0] for statement in second
            if not any(statement is earlier for earlier in first)]


async def two_conversations(local: LocalHub) -> tuple[list[LocalAgent], list[str]]:
    """Alice, bob and carol; a direct conversation and a group, each with a few messages from bob."""
    alice, bob, carol = [await local.agent(name) for name in ("alice", "bob", "carol")]
    direct = await local.as_agent(alice, "conversations.open_direct", {"agent": bob.handle})
    group = await local.as_agent(alice, "conversations.create_group",
                                 {"title": "three", "members": [bob.agent_id, carol.agent_id]})
    conversation_ids = [direct["conversation_id"], group["conversation_id"]]
    for conversation_id in conversation_ids:
        for _ in range(3):
            await local.as_agent(bob, "messages.send", {"conversation_id": conversation_id, "body": "hello"})
    return [alice, bob, carol], conversation_ids


async def test_a_message_sent_builds_no_statement_at_run_time(tmp_path: Path, store_kind: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the write's own statements count (the writer thread): the credential check is not the send."""
    writing = threading.local()
    write = Store.write

    async def traced_write(store: Store, fn: Callable[[Connection], Any], **kwargs: Any) -> Any:
        def traced(conn: Connection) -> Any:
            writing.active = True
            try:
                return fn(conn)
            finally:
                writing.active = False
        return await write(store, traced, **kwargs)

    async with local_hub(tmp_path, store_kind, embeddings="off") as local:
        (alice, bob, _), conversation_ids = await two_conversations(local)

        async def send_round(number: int) -> None:
            for conversation_id in conversation_ids:
                await local.as_agent(bob, "messages.send", {"conversation_id": conversation_id, "body": "hello"})
                await local.as_agent(alice, "messages.send", {"conversation_id": conversation_id, "body": "hi",
                                                              "client_msg_id": f"{number}-{conversation_id}"})

        monkeypatch.setattr(Store, "write", traced_write)
        assert await built_again(local.hub.store.engine, send_round,
                                 only=lambda: getattr(writing, "active", False)) == []


READS: dict[str, Callable[[str, LocalAgent], dict[str, Any]]] = {
    "conversations.get": lambda conversation_id, _: {"conversation_id": conversation_id},
    "conversations.list": lambda _, __: {"limit": 20},
    "messages.list": lambda conversation_id, _: {"conversation_id": conversation_id, "limit": 20},
    "messages.mark_read": lambda conversation_id, _: {"conversation_id": conversation_id, "seq": 2},
    "agents.get": lambda _, peer: {"agent": peer.handle},
}
"""What an MCP `read_messages` or `inbox` call and a client's reading run, with their params."""


@pytest.mark.parametrize("operation", list(READS))
async def test_reading_builds_no_statement_at_run_time(tmp_path: Path, store_kind: str, operation: str) -> None:
    async with local_hub(tmp_path, store_kind, embeddings="off") as local:
        (alice, bob, _), conversation_ids = await two_conversations(local)

        async def read_round(_number: int) -> None:
            for conversation_id in conversation_ids:
                await local.as_agent(alice, operation, READS[operation](conversation_id, bob))

        assert await built_again(local.hub.store.engine, read_round) == []


@pytest.mark.parametrize("operation", [name for name in READS if OPERATIONS[name].read_only])
async def test_reading_on_sqlite_runs_its_statements_in_the_event_loop_thread(tmp_path: Path, operation: str) -> None:
    async with local_hub(tmp_path, "sqlite", embeddings="off") as local:
        (alice, bob, _), conversation_ids = await two_conversations(local)
        threads: set[int] = set()

        def record(*_args: Any) -> None:
            threads.add(threading.get_ident())

        # Where a read begins its transaction: prepared statements pass no `Connection.execute`.
        event.listen(local.hub.store.engine, "begin", record)
        try:
            for conversation_id in conversation_ids:
                await local.as_agent(alice, operation, READS[operation](conversation_id, bob))
        finally:
            event.remove(local.hub.store.engine, "begin", record)
        assert threads == {threading.get_ident()}
