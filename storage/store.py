"""The store: a synchronous SQLAlchemy engine driven from anyio.

Reads run in worker threads behind a limiter (a bounded read on SQLite, in the caller's thread).
Writes go to one writer task that group-commits: it takes every write waiting in its queue, runs
them in one transaction, commits once, and only then acknowledges each write. A write whose function
raises is rolled back alone and its caller gets the exception; the others still commit (the batch is
re-run with a savepoint per write).

A caller that is cancelled while waiting does not cancel its write: the writer owns it, so a client
disconnecting mid-request never leaves a half-done write behind.

A write may carry an `on_commit` hook. The writer calls the hooks of a batch right after its commit,
in the order the writes ran, before acknowledging any of them: the hub publishes events from there,
so live subscribers see them in commit (and cursor) order.
"""

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from pydantic_core import from_json
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.pool import ConnectionPoolEntry

from storage.queries._prepared import Prepared
from storage.schema import EncodedJson

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH: Final = 512
QUEUE_SIZE: Final = 8192
READ_THREADS: Final = 8
BUSY_TIMEOUT_MS: Final = 10_000
ERASURE_WAIT_MS: Final = 100
"""How long the WAL truncation after an erasure waits for readers of an older snapshot."""
ERASURE_RETRY_SECONDS: Final = 0.25
CHECKPOINT_SECONDS: Final = 1.0
"""SQLite: while writes come in, the WAL is copied into the database this often, on a thread of its own."""
WAL_LIMIT_FRAMES: Final = 10_000
"""SQLite: past this many frames (40 MiB of 4 KiB pages) the writer checkpoints the WAL itself between two
batches, so that it starts again from its beginning (see `_checkpoint_behind_writer`)."""
SQLITE_READ_THREADS: Final = 2
"""SQLite reads are CPU in this process (GIL-bound Python around a C library), not waits on a server:
more threads than cores only contend. GET of a 50-message page, 8 clients, 2 cores: 332 req/s (p99 48 ms)
with 8 threads, 496 req/s (p99 22 ms) with 2 (bench/rest.py). PostgreSQL reads wait on the network: 8."""


class _WriteRaised(Exception):
    """A write raised during an optimistic (savepoint-free) batch run."""


class StoreClosed(Exception):
    """The writer has stopped (the hub is shutting down); the write was not made."""


@dataclass(eq=False)
class _Write(Generic[T]):
    fn: Callable[[Connection], T]
    on_commit: Callable[[T], None] | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    result: T | None = None
    error: BaseException | None = None


def _sqlite_pragmas(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    # Hand transaction control to SQLAlchemy (pysqlite's own handling breaks SAVEPOINT).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        f"busy_timeout={BUSY_TIMEOUT_MS}",
        "secure_delete=ON",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # The writer takes the write lock up front so a concurrent process cannot make it fail mid-way.
    # On the DBAPI cursor (prepared): `exec_driver_sql` cost 10 µs of Python, every read and batch.
    _BEGIN[conn.get_execution_options().get("sqlite_begin", "BEGIN")].execute(conn, {}).close()


_BEGIN: Final = {statement: Prepared(text(statement)) for statement in ("BEGIN", "BEGIN IMMEDIATE")}


def _json_value(text: str | bytes) -> Any:
    """A JSON column's value, parsed by pydantic's parser (in Rust): a page of 50 messages has 150 JSON
    values, and `json.loads` spent about 1 µs of Python on each, `null` included. What that parser
    refuses and `json.loads` takes (a lone surrogate escape, nesting beyond ~200 levels) goes to
    `json.loads`, so every stored value reads as before."""
    try:
        return from_json(text)
    except ValueError:
        return json.loads(text)


def _json_text(value: Any) -> str:
    """A JSON column's text: an `EncodedJson` as it is, anything else encoded by `json.dumps`.

    SQLAlchemy writes None as JSON `null`: three columns of every message sent. `json.dumps` builds
    an encoder for each value: 1.2 µs for that one word, 0.1 here."""
    if value is None:
        return "null"
    return value if isinstance(value, EncodedJson) else json.dumps(value)


def create_store_engine(url: str) -> Engine:
    """An engine for `url` (`sqlite:///path` or `postgresql+psycopg://…`) with Parley's settings."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False}, pool_size=READ_THREADS + 1,
                               json_serializer=_json_text, json_deserializer=_json_value)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_size=READ_THREADS + 1, max_overflow=0, pool_pre_ping=True,
                         json_serializer=_json_text, json_deserializer=_json_value)


class Store:
    """The one way the hub reaches the database. Start `run` in a task group before writing."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._send, self._receive = anyio.create_memory_object_stream[_Write[Any]](max_buffer_size=QUEUE_SIZE)
        self._read_limiter = anyio.CapacityLimiter(SQLITE_READ_THREADS if self.dialect == "sqlite" else READ_THREADS)
        self._bounded_reader: Connection | None = None
        """SQLite: the connection bounded reads run on, in the event loop's thread, one at a time (kept: taking
        one from the pool and giving it back cost 11 µs a read)."""
        self._write_limiter = anyio.CapacityLimiter(1)
        self.commits = 0
        self.writes = 0
        self.writer_seconds = 0.0
        """Wall time the writer spent running and committing batches (waits for the interpreter lock included)."""
        self.writer_cpu_seconds = 0.0
        """CPU time of the writer's thread meanwhile: what the writer itself did (SQLite included)."""
        self._checkpoint_lock = anyio.Lock()
        """Held by a checkpoint of the whole WAL (the checkpointer's, an erasure's): one at a time."""
        self._wal_written = anyio.Event()
        self._wal_frames = 0
        """Frames in the WAL at the last checkpoint behind the writer."""
        self._writer_dbapi: Any = None
        """The DBAPI connection the writer last set `wal_autocheckpoint=0` on (it is replaced after a failed batch)."""
        self.erasure_pending = False
        """An erasure is committed but its old page images are still in the SQLite WAL (a reader holds them)."""
        self._erasure_wakeup = anyio.Event()

    async def read(self, fn: Callable[[Connection], T], *, bounded: bool = False) -> T:
        """Run `fn(conn)` inside a read transaction, in a worker thread, so a long read does not hold up the loop.

        A `bounded` read (at most a page of rows, found through an index) runs on SQLite in the calling
        task's own thread instead. It is Python work under the interpreter lock either way; in a worker it
        also pays the hop to the thread and back, and the lock changes hands at every row SQLite steps
        through (the sqlite3 module lets it go for each). That overhead was 40% of the hub's CPU on a
        REST page of messages (bench/RESULTS.md). A WAL reader waits on no lock but a crashed file's
        recovery, which the writer has done at start. Bounded reads share a connection the store keeps
        (`_read_bounded`). PostgreSQL reads wait on the network: always a worker.
        """

        def run() -> T:
            with self.engine.connect() as conn, conn.begin():
                return fn(conn)

        if bounded and self.dialect == "sqlite":
            await anyio.lowlevel.checkpoint()
            return self._read_bounded(fn)
        return await anyio.to_thread.run_sync(run, limiter=self._read_limiter)

    def _read_bounded(self, fn: Callable[[Connection], T]) -> T:
        # No await from here to the return: one bounded read at a time uses the connection.
        conn = self._bounded_reader
        if conn is None or conn.invalidated:
            if conn is not None:
                conn.close()
            conn = self._bounded_reader = self.engine.connect()
        with conn.begin():
            return fn(conn)

    async def write(self, fn: Callable[[Connection], T], *, on_commit: Callable[[T], None] | None = None) -> T:
        """Queue `fn(conn)` for the writer; return its result once it is committed.

        `on_commit(result)` runs on the writer's task right after the commit, in commit order; it
        must not block or raise.

        `fn` may run more than once (a batch is retried when one of its writes raises), so it must
        have no effect outside `conn`.

        Raises:
            StoreClosed: the writer is not running.
            Exception: whatever `fn` raised; its changes were rolled back.
        """
        request: _Write[T] = _Write(fn, on_commit)
        try:
            try:  # without a checkpoint when the queue has room (nearly always): one less trip through the loop
                self._send.send_nowait(request)
            except anyio.WouldBlock:
                await self._send.send(request)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise StoreClosed("the store is closed") from None
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result  # type: ignore[return-value]

    async def ping(self) -> bool:
        try:
            await self.read(lambda conn: conn.execute(text("SELECT 1")).scalar_one())
        except Exception:  # readiness probe: any failure means "not ready"
            log.warning("store ping failed", exc_info=True)
            return False
        return True

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The writer task (and, on SQLite, the one that finishes erasures a reader held up).

        Returns when `close` has been called and the queue is drained.
        """
        async with anyio.create_task_group() as tg:
            if self.dialect == "sqlite":
                # A hub killed with an erasure pending left the erased bytes in the WAL: truncate it now.
                await self._truncate_wal()
                await anyio.to_thread.run_sync(self._optimize, limiter=self._write_limiter)
                tg.start_soon(self._finish_pending_erasures)
                tg.start_soon(self._checkpoint_behind_writer)
            await self._write_until_closed(task_status)
            tg.cancel_scope.cancel()
        if self.erasure_pending and not await self._truncate_wal():
            log.warning("an erasure is not final: a reader still holds old page images in the WAL; "
                        "they are truncated at the next start")

    async def _write_until_closed(self, task_status: TaskStatus[None]) -> None:
        # An option of this Connection, not of its pooled DBAPI connection (`info`): it outlives a
        # reconnect after a failed batch, and a reader that later gets the DBAPI connection never sees it.
        conn = (await anyio.to_thread.run_sync(self.engine.connect)).execution_options(sqlite_begin="BEGIN IMMEDIATE")
        try:
            task_status.started()
            async for first in self._receive:
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                # Shielded: once a batch is in flight it commits or fails whole, never half.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._commit_batch, conn, batch, limiter=self._write_limiter)
                self._wal_written.set()
                for request in batch:
                    if request.error is None and request.on_commit is not None:
                        self._after_commit(request)
                    request.done.set()
        finally:
            self._fail_pending()
            self._receive.close()
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(conn.close)

    @staticmethod
    def _after_commit(request: _Write[Any]) -> None:
        try:
            request.on_commit(request.result)  # type: ignore[misc]
        except Exception:  # the write is committed; a failing hook must not stop the writer
            log.exception("an on_commit hook failed")

    async def finish_erasure(self) -> None:
        """SQLite: make an erasure final on disk; nothing to do on other databases.

        With `secure_delete` the database's free space is zeroed, but the WAL still holds old page
        images (with the erased bytes) until it is checkpointed and truncated. That needs every other
        reader to have moved past the old snapshot. Called after an erasure commits: when a reader of
        an older snapshot holds the WAL (a backup, `parley mcp` on the same file) for more than
        `ERASURE_WAIT_MS`, this returns at once and `run` truncates the WAL as soon as it lets go.
        """
        if self.dialect == "sqlite" and not await self._truncate_wal():
            if not self.erasure_pending:
                log.info("a reader holds the WAL; the erasure becomes final on disk once it lets go")
            self.erasure_pending = True
            self._erasure_wakeup.set()

    async def _truncate_wal(self) -> bool:
        """Checkpoint the whole WAL into the database and truncate it; False if readers held it.

        Under the writer's limiter, so no batch is committed meanwhile.
        """
        async with self._checkpoint_lock:
            busy, _ = await anyio.to_thread.run_sync(self._wal_checkpoint, "TRUNCATE", ERASURE_WAIT_MS,
                                                     limiter=self._write_limiter)
        return not busy

    def _wal_checkpoint(self, mode: str, busy_timeout_ms: int | None = None) -> tuple[bool, int]:
        """`PRAGMA wal_checkpoint(mode)` on a connection of the pool (waiting on readers at most
        `busy_timeout_ms`, for the modes that wait): whether it was held up, and the frames in the WAL."""
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                if busy_timeout_ms is not None:
                    cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
                busy, frames, _ = cursor.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            finally:
                if busy_timeout_ms is not None:
                    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                cursor.close()
        finally:
            raw.close()
        return bool(busy), frames

    async def _checkpoint_behind_writer(self) -> None:
        """SQLite: copy the WAL into the database on a thread of its own, at most every `CHECKPOINT_SECONDS`
        while writes come in.

        SQLite's own checkpoint runs inside the `COMMIT` that takes the WAL past 1,000 pages, and syncs
        the file: the writer, and every write waiting on it, stopped meanwhile. The writer's connection
        has it off (`_checkpoints_off`). A checkpoint beside a busy writer never catches up with the
        frames committed while it runs, and the WAL starts again from its beginning only after one that
        did: past `WAL_LIMIT_FRAMES` the writer finishes it between two batches (`_commit_batch`).
        """
        while True:
            await self._wal_written.wait()
            self._wal_written = anyio.Event()
            async with self._checkpoint_lock:
                _, self._wal_frames = await anyio.to_thread.run_sync(self._wal_checkpoint, "PASSIVE")
            await anyio.sleep(CHECKPOINT_SECONDS)

    def _optimize(self) -> None:
        """SQLite: refresh the planner's statistics where they are stale (bounded work; what SQLite advises
        a long-running process to do). PostgreSQL's autovacuum does the same on its side."""
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("PRAGMA analysis_limit=400")
            cursor.execute("PRAGMA optimize")
            cursor.close()
        finally:
            raw.close()

    async def _finish_pending_erasures(self) -> None:
        while True:
            await self._erasure_wakeup.wait()
            self._erasure_wakeup = anyio.Event()
            while self.erasure_pending:
                await anyio.sleep(ERASURE_RETRY_SECONDS)
                if await self._truncate_wal():
                    self.erasure_pending = False
                    log.info("the pending erasure is final on disk: the WAL is truncated")

    def close(self) -> None:
        """Stop accepting writes; the writer finishes what is queued and returns."""
        self._send.close()

    def _commit_batch(self, conn: Connection, batch: list[_Write[Any]]) -> None:
        # Optimistic first: no savepoints (they cost two uncached statements per write). Only when a
        # write raises is the batch rolled back and run again with each write in its own savepoint.
        started, cpu_started = time.perf_counter(), time.thread_time()
        if self.dialect == "sqlite":
            self._checkpoints_off(conn)
        try:
            self._run_batch(conn, batch, isolated=False)
        except _WriteRaised:
            self._run_batch(conn, batch, isolated=True)
        if self._wal_frames > WAL_LIMIT_FRAMES:  # nothing is written while this runs: it finishes the WAL
            _, self._wal_frames = self._wal_checkpoint("PASSIVE")
        self.commits += 1
        self.writes += len(batch)
        self.writer_seconds += time.perf_counter() - started
        self.writer_cpu_seconds += time.thread_time() - cpu_started

    def _checkpoints_off(self, conn: Connection) -> None:
        """No checkpoint inside the writer's commits (`_checkpoint_behind_writer`); set on each new DBAPI
        connection the writer gets (after a failed batch)."""
        dbapi_connection = conn.connection.dbapi_connection
        if dbapi_connection is not self._writer_dbapi:
            dbapi_connection.execute("PRAGMA wal_autocheckpoint=0").close()  # type: ignore[union-attr]
            self._writer_dbapi = dbapi_connection

    def _run_batch(self, conn: Connection, batch: list[_Write[Any]], *, isolated: bool) -> None:
        try:
            with conn.begin():
                for request in batch:
                    request.error = None
                    if not isolated:
                        try:
                            request.result = request.fn(conn)
                        except Exception as exc:
                            raise _WriteRaised from exc
                        continue
                    savepoint = conn.begin_nested()
                    try:
                        request.result = request.fn(conn)
                    except Exception as exc:  # the caller gets it; the batch goes on
                        savepoint.rollback()
                        request.error = exc
                    else:
                        savepoint.commit()
        except _WriteRaised:
            raise
        except Exception as exc:  # the commit itself failed: nothing in the batch was written
            log.exception("group commit of %d writes failed", len(batch))
            conn.invalidate()  # a broken connection is replaced on the next batch
            for request in batch:
                request.error = request.error or exc

    def _fail_pending(self) -> None:
        while True:
            try:
                request = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                return
            request.error = StoreClosed("the store closed before this write ran")
            request.done.set()

    def dispose(self) -> None:
        if self._bounded_reader is not None:
            self._bounded_reader.close()
            self._bounded_reader = None
        self.engine.dispose()

