"""storage.store.Store, in-process, on a real SQLite file and a real PostgreSQL database; and the
migrations, which must build the schema the queries are written against.

The writer group-commits: it acknowledges a write only once its transaction has committed, runs many
writes per transaction, rolls a failing write back alone, keeps a write going when its caller is
cancelled, and refuses writes once closed.
"""

import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Connection, Engine, Integer, MetaData, String, Table, func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

import storage.store
from storage import schema
from storage.migrations import upgrade
from storage.queries import events as event_queries
from storage.queries._prepared import Prepared
from storage.queries.events import EVENT_APPEND_LOCK
from storage.store import Store, StoreClosed, create_store_engine

from .conftest import postgres_only, sqlite_only

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("value", String(64), nullable=False),
)




@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_store_engine(database_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def observer(database_url: str) -> Iterator[Engine]:
    """A second engine with its own connections: it sees only what has been committed."""
    engine = create_store_engine(database_url)
    yield engine
    engine.dispose()


@asynccontextmanager
async def running(store: Store) -> AsyncIterator[Store]:
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        try:
            yield store
        finally:
            store.close()


def insert(item_id: int, value: str = "v") -> Any:
    def fn(conn: Connection) -> int:
        conn.execute(items.insert().values(id=item_id, value=value))
        return item_id

    return fn


def committed_ids(observer: Engine) -> set[int]:
    with observer.connect() as conn:
        return set(conn.execute(select(items.c.id)).scalars())


def is_committed(observer: Engine, item_id: int) -> bool:
    with observer.connect() as conn:
        return conn.execute(select(func.count()).where(items.c.id == item_id)).scalar_one() == 1


async def test_concurrent_writes_are_acknowledged_only_after_commit_and_committed_in_groups(
    anyio_backend: str, engine: Engine, observer: Engine
) -> None:
    store = Store(engine)
    seen_uncommitted: list[bool] = []

    def watched(conn: Connection) -> int:
        conn.execute(items.insert().values(id=0, value="watched"))
        seen_uncommitted.append(is_committed(observer, 0))  # from inside the open transaction
        return 0

    count = 300
    visible_at_ack: dict[int, bool] = {}

    async def write(item_id: int) -> None:
        result = await store.write(watched if item_id == 0 else insert(item_id))
        assert result == item_id
        visible_at_ack[item_id] = await anyio.to_thread.run_sync(is_committed, observer, item_id)

    with anyio.fail_after(60):
        async with running(store):
            async with anyio.create_task_group() as tg:
                for item_id in range(count):
                    tg.start_soon(write, item_id)
    assert seen_uncommitted == [False]
    assert visible_at_ack == {item_id: True for item_id in range(count)}
    assert committed_ids(observer) == set(range(count))
    assert store.writes == count
    assert store.commits < store.writes
    assert 0 < store.writer_cpu_seconds and 0 < store.writer_seconds  # the writer's time, for /metrics


async def test_writes_queued_together_commit_in_one_transaction(anyio_backend: str, engine: Engine,
                                                                observer: Engine) -> None:
    store = Store(engine)
    results: list[int] = []

    async def write(item_id: int) -> None:
        results.append(await store.write(insert(item_id)))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for item_id in range(50):
                tg.start_soon(write, item_id)
            await anyio.wait_all_tasks_blocked()  # all 50 are queued before the writer starts
            async with running(store):
                pass
    assert sorted(results) == list(range(50))
    assert (store.commits, store.writes) == (1, 50)
    assert committed_ids(observer) == set(range(50))


async def test_a_write_that_raises_is_rolled_back_alone_while_its_batch_commits(
    anyio_backend: str, engine: Engine, observer: Engine
) -> None:
    store = Store(engine)

    class Refused(Exception):
        pass

    def half_then_raise(conn: Connection) -> int:
        conn.execute(items.insert().values(id=1000, value="half"))  # written, then rolled back
        raise Refused()

    writes = {item_id: insert(item_id) for item_id in range(10)}
    writes[100] = half_then_raise
    writes[101] = insert(3)  # the same key as another write in the batch: the database refuses it
    outcomes: dict[int, Any] = {}

    async def write(key: int) -> None:
        try:
            outcomes[key] = await store.write(writes[key])
        except Exception as exc:
            outcomes[key] = exc

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for key in writes:
                tg.start_soon(write, key)
                await anyio.wait_all_tasks_blocked()  # queued in this order: 101 after 3
            async with running(store):
                pass
    assert (store.commits, store.writes) == (1, len(writes))  # one batch, one transaction
    assert isinstance(outcomes.pop(100), Refused)
    assert isinstance(outcomes.pop(101), IntegrityError)
    assert outcomes == {item_id: item_id for item_id in range(10)}
    assert committed_ids(observer) == set(range(10))
    with observer.connect() as conn:
        assert conn.execute(select(items.c.value).where(items.c.id == 3)).scalar_one() == "v"


async def test_a_cancelled_caller_does_not_cancel_its_write_while_it_runs(anyio_backend: str, engine: Engine,
                                                                           observer: Engine) -> None:
    store = Store(engine)
    entered, release = threading.Event(), threading.Event()

    def slow(conn: Connection) -> int:
        conn.execute(items.insert().values(id=1, value="slow"))
        entered.set()
        release.wait(30)
        return 1

    cancelled = anyio.Event()

    async def caller(scope: anyio.CancelScope) -> None:
        with scope:
            await store.write(slow)
        assert scope.cancelled_caught
        cancelled.set()

    with anyio.fail_after(60):
        async with running(store):
            async with anyio.create_task_group() as tg:
                scope = anyio.CancelScope()
                tg.start_soon(caller, scope)
                await anyio.to_thread.run_sync(entered.wait)
                scope.cancel()
                await cancelled.wait()  # the caller is gone while its write is still running
                assert not is_committed(observer, 1)
                release.set()
            assert await store.write(insert(2)) == 2  # the writer is in order: 1 is done by now
    assert committed_ids(observer) == {1, 2}


async def test_a_caller_cancelled_before_the_writer_starts_still_gets_its_write_made(
    anyio_backend: str, engine: Engine, observer: Engine
) -> None:
    store = Store(engine)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def caller() -> None:
                with scope:
                    await store.write(insert(7))

            tg.start_soon(caller)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            async with running(store):
                pass
    assert committed_ids(observer) == {7}


async def test_on_commit_hooks_run_after_the_commit_in_order_and_only_for_writes_that_succeeded(
    anyio_backend: str, engine: Engine, observer: Engine
) -> None:
    store = Store(engine)
    hooked: list[tuple[int, bool]] = []

    def hook(item_id: int) -> None:
        hooked.append((item_id, is_committed(observer, item_id)))

    def refuse(conn: Connection) -> int:
        raise ValueError("no")

    async def write(fn: Any) -> None:
        try:
            await store.write(fn, on_commit=hook)
        except ValueError:
            pass

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for item_id in range(5):
                tg.start_soon(write, insert(item_id))
                await anyio.wait_all_tasks_blocked()  # queued in this order
            tg.start_soon(write, refuse)
            await anyio.wait_all_tasks_blocked()
            async with running(store):
                pass
    assert hooked == [(item_id, True) for item_id in range(5)]


async def test_writes_queued_before_close_commit_and_writes_after_close_raise_store_closed(
    anyio_backend: str, engine: Engine, observer: Engine
) -> None:
    store = Store(engine)
    results: list[int] = []

    async def write(item_id: int) -> None:
        results.append(await store.write(insert(item_id)))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for item_id in range(5):
                tg.start_soon(write, item_id)
            await anyio.wait_all_tasks_blocked()
            store.close()
            with pytest.raises(StoreClosed):
                await store.write(insert(99))
            await store.run()  # drains what was queued, then returns
        with pytest.raises(StoreClosed):
            await store.write(insert(100))
    assert sorted(results) == list(range(5))
    assert committed_ids(observer) == set(range(5))


async def test_reads_see_committed_writes_and_run_beside_the_writer(anyio_backend: str, engine: Engine) -> None:
    store = Store(engine)
    with anyio.fail_after(60):
        async with running(store):
            await store.write(insert(1, "one"))
            async with anyio.create_task_group() as tg:
                values: list[str] = []

                async def read() -> None:
                    values.append(await store.read(
                        lambda conn: conn.execute(select(items.c.value).where(items.c.id == 1)).scalar_one()))

                for _ in range(20):
                    tg.start_soon(read)
            assert values == ["one"] * 20
            assert await store.ping() is True


async def test_a_bounded_read_stays_in_the_callers_thread_on_sqlite_and_every_other_read_goes_to_a_worker(
        anyio_backend: str, engine: Engine) -> None:
    """On SQLite a bounded read is cheaper where it is called (the hop and the lock changing hands per row
    cost more than the read); a read that may be long goes to a worker, where it cannot hold up the loop.
    PostgreSQL reads wait on the network: always a worker."""
    store = Store(engine)
    caller = threading.get_ident()

    def reader_thread(conn: Connection) -> int:
        conn.execute(select(items.c.id).limit(1)).all()
        return threading.get_ident()

    with anyio.fail_after(30):
        async with running(store):
            assert await store.read(reader_thread) != caller
            assert (await store.read(reader_thread, bounded=True) == caller) == (store.dialect == "sqlite")


async def test_bounded_reads_see_every_commit_and_a_failed_one_leaves_the_next_unharmed(
        anyio_backend: str, engine: Engine, observer: Engine) -> None:
    """On SQLite bounded reads share one kept connection (`Store._read_bounded`): each must begin its own
    snapshot (none left open to read stale rows from, or to hold the WAL), also after one that raised."""
    store = Store(engine)

    def values(conn: Connection) -> list[str]:
        return list(conn.execute(select(items.c.value).order_by(items.c.id)).scalars())

    def failing(conn: Connection) -> None:
        conn.execute(select(items.c.id)).all()
        raise LookupError("the read's own error")

    with anyio.fail_after(30):
        async with running(store):
            for item_id in range(3):
                await store.write(insert(item_id, f"v{item_id}"))
                assert await store.read(values, bounded=True) == [f"v{n}" for n in range(item_id + 1)]
                with pytest.raises(LookupError):
                    await store.read(failing, bounded=True)
            # Committed by another connection, as another process would: seen by the next bounded read.
            with observer.begin() as conn:
                conn.execute(items.insert().values(id=9, value="elsewhere"))
            assert (await store.read(values, bounded=True))[-1] == "elsewhere"
    store.dispose()


async def test_a_read_that_is_not_bounded_leaves_the_loop_running(anyio_backend: str, engine: Engine) -> None:
    store = Store(engine)
    ticks = 0
    reading = threading.Event()

    def slow_read(conn: Connection) -> None:
        conn.execute(select(items.c.id).limit(1)).all()
        reading.set()
        time.sleep(0.3)  # a long scan, waiting without the interpreter lock

    async def tick() -> None:
        nonlocal ticks
        while not reading.is_set():
            await anyio.sleep(0.01)
        while True:
            ticks += 1
            await anyio.sleep(0.01)

    with anyio.fail_after(30):
        async with running(store), anyio.create_task_group() as tg:
            tg.start_soon(tick)
            await store.read(slow_read)
            tg.cancel_scope.cancel()
    assert ticks >= 5


@postgres_only
def test_the_event_append_lock_is_taken_once_a_transaction_and_again_after_a_savepoint_rolls_back(
    engine: Engine, observer: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serialize_appends` runs one statement per transaction (a group commit's many writes share it),
    and still holds the lock when a savepoint it was taken in has been rolled back."""
    taken = []
    take = event_queries._serialize_appends.scalar
    monkeypatch.setattr(event_queries._serialize_appends, "scalar", lambda *args: taken.append(1) or take(*args))

    def lock_held() -> bool:
        with observer.connect() as other, other.begin():
            return not other.execute(select(func.pg_try_advisory_xact_lock(EVENT_APPEND_LOCK))).scalar_one()

    with engine.connect() as conn:
        with conn.begin():
            event_queries.serialize_appends(conn)
            event_queries.serialize_appends(conn)
            assert len(taken) == 1 and lock_held()
        assert not lock_held()

        with conn.begin():
            savepoint = conn.begin_nested()
            event_queries.serialize_appends(conn)
            savepoint.rollback()
            assert not lock_held()
            with conn.begin_nested():
                event_queries.serialize_appends(conn)
            assert lock_held()


@postgres_only
async def test_a_batch_whose_connection_the_server_dropped_runs_again_on_a_new_one(
        anyio_backend: str, engine: Engine, observer: Engine) -> None:
    """PostgreSQL ends the writer's connection (a restart, an idle timeout). The next batch's first
    statement, a prepared one, finds it lost: the connection is invalidated, as `Connection.execute`
    would, and the batch runs again on a new one. No write fails."""
    store = Store(engine)
    prepared = Prepared(items.insert(), column_keys=["id", "value"])

    def insert_prepared(item_id: int) -> Any:
        def fn(conn: Connection) -> int:
            prepared.execute(conn, {"id": item_id, "value": "v"}).close()
            return item_id

        return fn

    with anyio.fail_after(30):
        async with running(store):
            assert await store.write(insert_prepared(1)) == 1
            with observer.connect() as admin:
                ended = admin.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                           "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
                assert ended.scalar_one() >= 1
            assert await store.write(insert_prepared(2)) == 2
    store.dispose()
    assert committed_ids(observer) == {1, 2}


@sqlite_only
async def test_the_writer_takes_the_write_lock_up_front_also_after_a_batch_failed(
        anyio_backend: str, database_url: str, observer: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer begins each batch with `BEGIN IMMEDIATE`, so another process (`parley mcp` on the same
    file) cannot commit in the middle of it. A batch that could not begin (that process held the lock
    past the busy timeout) gets its connection replaced; the next batch still begins that way."""
    monkeypatch.setattr(storage.store, "BUSY_TIMEOUT_MS", 200)
    engine = create_store_engine(database_url)
    metadata.create_all(engine)
    store = Store(engine)
    path = database_url.removeprefix("sqlite:///")

    def other_process_can_write() -> bool:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            other.close()

    def insert_checking_the_lock(item_id: int) -> Any:
        def fn(conn: Connection) -> bool:
            could = other_process_can_write()  # before this batch has written anything
            conn.execute(items.insert().values(id=item_id, value="v"))
            return could

        return fn

    with anyio.fail_after(30):
        async with running(store):
            assert await store.write(insert_checking_the_lock(1)) is False
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(OperationalError, match="locked"):
                await store.write(insert(2))
            holder.execute("ROLLBACK")
            holder.close()
            assert await store.write(insert_checking_the_lock(3)) is False
    store.dispose()
    engine.dispose()
    assert committed_ids(observer) == {1, 3}


@sqlite_only
async def test_the_writer_commits_without_checkpointing_and_the_wal_is_checkpointed_beside_it(
        anyio_backend: str, engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's own checkpoint would run inside the writer's commit (and sync the file) while every write
    waited. The writer's connection has it off, also after a failed batch replaced that connection, and
    the store copies the WAL into the database on a thread of its own while writes come in."""
    monkeypatch.setattr(storage.store, "CHECKPOINT_SECONDS", 0.05)
    store = Store(engine)
    database = Path(database_url.removeprefix("sqlite:///"))

    def autocheckpoint(conn: Connection) -> int:
        return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())

    def write_then_fail(conn: Connection) -> None:
        conn.execute(items.insert().values(id=-1, value="never"))
        raise LookupError("no")

    with anyio.fail_after(30):
        async with running(store):
            assert await store.write(autocheckpoint) == 0
            size_before = database.stat().st_size
            for item_id in range(300):  # 300 pages or so: below the 1,000 of SQLite's own checkpoint
                await store.write(insert(item_id, "x" * 3000))
            while database.stat().st_size < size_before + 300 * 3000:  # the pages reached the database
                await anyio.sleep(0.02)
            store._writer_dbapi = None  # as after a failed batch: a new DBAPI connection
            with pytest.raises(LookupError):
                await store.write(write_then_fail)
            assert await store.write(autocheckpoint) == 0
    store.dispose()


@sqlite_only
async def test_the_wal_starts_again_from_its_beginning_under_writes_that_never_pause(
        anyio_backend: str, engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint beside a busy writer never catches up with it, and the WAL grows until one does:
    past `WAL_LIMIT_FRAMES` the writer finishes it between two batches, and the WAL starts over."""
    monkeypatch.setattr(storage.store, "CHECKPOINT_SECONDS", 0.01)
    monkeypatch.setattr(storage.store, "WAL_LIMIT_FRAMES", 200)
    store = Store(engine)
    wal = Path(database_url.removeprefix("sqlite:///") + "-wal")
    largest = 0

    async def writer(first: int) -> None:
        nonlocal largest
        for item_id in range(first, first + 1000):
            await store.write(insert(item_id, "x" * 3000))
            largest = max(largest, wal.stat().st_size)

    with anyio.fail_after(120):
        async with running(store), anyio.create_task_group() as tg:
            for first in range(0, 8000, 1000):
                tg.start_soon(writer, first)
    store.dispose()
    assert largest < 8000 * 3000 / 4  # some 24 MB written; the WAL stayed a fraction of it


def test_the_migrations_build_the_schema_the_queries_are_written_against(database_url: str) -> None:
    """Alembic compares the migrated database with `storage.schema` (types and server defaults too):
    a column added to one and not the other fails here, not in production. Comments are left out: the
    schema's are documentation, and the migrations do not carry them."""
    engine = create_store_engine(database_url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            differences = [d for d in compare_metadata(context, schema.metadata)
                           if not (isinstance(d, list) and d[0][0] == "modify_comment")]
    finally:
        engine.dispose()
    assert differences == []
