"""Sending a message builds no SQL statement at run time.

Sending is the hub's busiest write, and a statement SQLAlchemy builds on every call costs more Python
than the database then takes to run it: one such check, added with workflows, made sending twice as
slow before a benchmark noticed (bench/RESULTS.md). A send's statements are prepared
(`storage/queries/_prepared.py`, run on the DBAPI cursor) or built once at import; this checks that
every statement a send's write passes to `Connection.execute` is one it ran before.
"""

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event

from storage.store import Store

from .inprocess import local_hub

pytestmark = pytest.mark.anyio


async def test_a_message_sent_builds_no_statement_at_run_time(tmp_path: Path, store_kind: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    writing = threading.local()
    executed: list[Any] = []  # the statement objects, kept alive so that no two share an id
    write = Store.write

    async def traced_write(store: Store, fn: Callable[[Connection], Any], **kwargs: Any) -> Any:
        def traced(conn: Connection) -> Any:
            writing.active = True
            try:
                return fn(conn)
            finally:
                writing.active = False
        return await write(store, traced, **kwargs)

    def record(_conn: Connection, statement: Any, *_args: Any) -> None:
        if getattr(writing, "active", False):
            executed.append(statement)

    async with local_hub(tmp_path, store_kind, embeddings="off") as local:
        alice, bob, carol = [await local.agent(name) for name in ("alice", "bob", "carol")]
        direct = await local.as_agent(alice, "conversations.open_direct", {"agent": bob.handle})
        group = await local.as_agent(alice, "conversations.create_group",
                                     {"title": "three", "members": [bob.agent_id, carol.agent_id]})
        conversation_ids = [direct["conversation_id"], group["conversation_id"]]

        async def send_round(number: int) -> list[Any]:
            executed.clear()
            for conversation_id in conversation_ids:
                await local.as_agent(bob, "messages.send", {"conversation_id": conversation_id, "body": "hello"})
                await local.as_agent(alice, "messages.send", {"conversation_id": conversation_id, "body": "hi",
                                                              "client_msg_id": f"{number}-{conversation_id}"})
            return list(executed)

        monkeypatch.setattr(Store, "write", traced_write)
        event.listen(local.hub.store.engine, "before_execute", record)
        try:
            first, second = await send_round(1), await send_round(2)
        finally:
            event.remove(local.hub.store.engine, "before_execute", record)

    built_again = [str(statement).split("\n")[0] for statement in second
                   if not any(statement is earlier for earlier in first)]
    assert built_again == []
