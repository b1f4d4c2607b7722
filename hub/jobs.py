"""The durable job runner: background work that survives a crash and never runs twice at once.

A service that needs work done later (embedding a memory, ingesting a document, a workflow step, a
webhook delivery) writes a job in the same transaction as its change (`storage.queries.jobs.ensure`),
so the job exists exactly when the change committed, and calls `JobRunner.notify` after the commit so
this node starts it at once; other nodes find it when they next look (every `job_poll_seconds`).

Each kind has a handler, registered once. The runner claims due jobs of a kind in batches, leasing
them for `lease_seconds` (renewed while the handler works), and hands each batch to the handler as a
`Work`. The handler records each job's result with `Work.complete`, which writes the result and
deletes the job in one transaction only if the lease still holds: a worker that lost its lease (it
paused past it, and another node took the job) changes nothing. A job whose handler raises is tried
again after a backoff, up to `max_attempts`, then kept as `failed` with its error; the kind's
`given_up` hook records that on the job's subject in the same transaction, so nothing waits for a
retry that will not come.

Every task belongs to the runner's task group, which the hub owns: closing the hub cancels the
handlers (their jobs are leased to no one alive, and run again when the lease expires; on a single
node, at the next start).
"""

import logging
import secrets
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

import anyio
from anyio.abc import TaskGroup, TaskStatus
from sqlalchemy import Connection, update

from protocol.events import Event
from storage.queries import jobs as job_queries
from storage.schema import jobs as jobs_table
from storage.store import Store, StoreClosed

from .clock import Clock

log = logging.getLogger(__name__)

T = TypeVar("T")

BACKOFF_CAP_SECONDS: Final = 3600.0


class LeaseLost(Exception):
    """The job's lease expired and it may be someone else's now: its result was not written."""


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    subject: str
    payload: dict[str, Any]
    attempts: int
    """Including this one."""
    token: str


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: "Handler"
    batch: int = 1
    """Jobs handed to one call of the handler (embedding is cheaper in batches)."""
    concurrency: int = 1
    """Batches of this kind running at once on one node."""
    lease_seconds: float = 60.0
    max_attempts: int = 5
    backoff_seconds: float = 2.0
    """The first retry's delay; each later one doubles it (capped at an hour)."""
    gather_seconds: float = 0.0
    """How long to wait, once woken from idle, before claiming: jobs committed one at a time in a burst (a
    memory per request) are then claimed and written together, one claim and one result for many."""
    given_up: "GivenUp | None" = None


class Work:
    """One claimed batch, for its handler."""

    def __init__(self, runner: "JobRunner", jobs: list[Job]) -> None:
        self.jobs = jobs
        self._runner = runner
        self.done: set[int] = set()

    async def write(self, job: Job, write: Callable[[Connection], T], *,
                    on_commit: Callable[[T], None] | None = None) -> T:
        """Write part of a job's work, only while its lease holds (the job stays). `on_commit` (publishing
        the events written, say) runs right after the commit, in commit order, as for any store write.

        Raises:
            LeaseLost: the lease was lost: nothing was written.
        """

        def run(conn: Connection) -> T:
            if not job_queries.held(conn, job.id, job.token):
                raise LeaseLost(f"lost the lease of job {job.id}")
            return write(conn)

        return await self._runner.store.write(run, on_commit=on_commit)

    async def complete(self, jobs: Sequence[Job], write: Callable[[Connection, list[Job]], T] | None = None, *,
                       on_commit: Callable[[T], None] | None = None) -> T | None:
        """Write the result of `jobs` (`write(conn, jobs still held)`) and delete them, in one transaction;
        then `on_commit(result)`, as for `write`.

        Jobs whose lease was lost are left out; if all were, nothing is written.

        Raises:
            LeaseLost: every one of `jobs` had lost its lease.
        """

        def run(conn: Connection) -> tuple[list[Job], T | None]:
            token = jobs[0].token  # a batch is claimed, so leased, at once
            still = job_queries.held_of(conn, [job.id for job in jobs], token)
            held = [job for job in jobs if job.id in still]
            if not held:
                return [], None
            result = write(conn, held) if write is not None else None
            job_queries.finish(conn, [job.id for job in held], token)
            return held, result

        def committed(outcome: tuple[list[Job], T | None]) -> None:
            held, result = outcome
            if held and on_commit is not None:
                on_commit(result)  # type: ignore[arg-type]  # `write` ran, so this is its result

        held, result = await self._runner.store.write(run, on_commit=committed)
        self.done.update(job.id for job in held)
        if not held:
            raise LeaseLost(f"lost the lease of {len(jobs)} job(s)")
        return result

    async def defer(self, job: Job, write: Callable[[Connection], tuple[datetime, T]], *,
                    on_commit: Callable[[T], None] | None = None) -> T:
        """Write what the job did so far (`write` also says when it is to run again) and put it back to run
        then, attempts counted afresh, in one transaction while its lease holds: work that waits (for a
        reply, for a time) holds no task meanwhile.

        Raises:
            LeaseLost: nothing was written.
        """

        def run(conn: Connection) -> T:
            if not job_queries.held(conn, job.id, job.token):
                raise LeaseLost(f"lost the lease of job {job.id}")
            run_at, result = write(conn)
            job_queries.defer(conn, job.id, job.token, run_at)
            return result

        result = await self._runner.store.write(run, on_commit=on_commit)
        self.done.add(job.id)
        return result


Handler = Callable[[Work], Awaitable[None]]
Deliveries = Sequence[tuple[Event, Collection[str]]]
GivenUp = Callable[[Connection, Job, str], Deliveries]
"""Called with a job failed for good and why, in that transaction; the events to publish once it commits."""
"""Does a batch's work, calling `Work.complete` for each job done. A job it leaves uncompleted (by
raising, or by returning without completing it) is tried again later."""


@dataclass
class _KindState:
    kind: JobKind
    wakeup: anyio.Event = field(default_factory=anyio.Event)
    running: int = 0
    backlog: bool = False
    """The last claim took a whole batch: more are likely due, so there is nothing to gather."""


class JobRunner:
    def __init__(self, store: Store, clock: Clock, publish: Callable[[Deliveries], None], *, poll_seconds: float,
                 single_node: bool) -> None:
        self.store = store
        self._clock = clock
        self._publish = publish
        self._poll_seconds = poll_seconds
        self._single_node = single_node
        self._kinds: dict[str, _KindState] = {}
        self._tasks: TaskGroup | None = None

    def register(self, kind: JobKind) -> None:
        """Add a kind of job; before `run`."""
        if kind.name in self._kinds:
            raise RuntimeError(f"job kind {kind.name!r} is registered twice")
        self._kinds[kind.name] = _KindState(kind)

    def notify(self, kind: str) -> None:
        """A job of `kind` was just committed: look for it now rather than at the next poll."""
        state = self._kinds.get(kind)
        if state is not None:
            state.wakeup.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Claim and run jobs of every registered kind until cancelled."""
        if self._single_node and self._kinds:
            # Nobody else can hold a lease here: those of a hub that was killed are released at once.
            await self.store.write(self._release_all)
        async with anyio.create_task_group() as tg:
            self._tasks = tg
            for state in self._kinds.values():
                tg.start_soon(self._claim_loop, state)
            task_status.started()

    def _release_all(self, conn: Connection) -> None:
        conn.execute(update(jobs_table).where(jobs_table.c.lease_token.is_not(None))
                     .values(lease_token=None, lease_until=None))

    async def _claim_loop(self, state: _KindState) -> None:
        kind = state.kind
        while True:
            state.wakeup = anyio.Event()
            if state.running >= kind.concurrency:
                # Nothing can be claimed until a batch ends, and its end wakes this loop. Looking when the
                # next job is due meanwhile scanned every pending job of the kind at each wake-up: 12% of
                # the hub's time while a large ingestion queued embeddings (bench.send_beside_ingestion).
                await state.wakeup.wait()
                continue
            claimed: list[Job] = []
            try:
                claimed = await self._claim(kind)
            except StoreClosed:
                return
            except Exception:  # a database hiccup: log it and look again at the next poll
                log.exception("claiming %s jobs failed", kind.name)
            if claimed:
                state.running += 1
                state.backlog = len(claimed) == kind.batch
                assert self._tasks is not None
                self._tasks.start_soon(self._run_batch, state, claimed)
                continue
            woken = False
            with anyio.move_on_after(await self._idle_seconds(kind)):
                await state.wakeup.wait()
                woken = True
            if woken and kind.gather_seconds and not state.backlog:
                await anyio.sleep(kind.gather_seconds)

    async def _idle_seconds(self, kind: JobKind) -> float:
        """How long to wait before looking again: until the next job is due, at most a poll interval."""
        try:
            due = await self.store.read(lambda conn: job_queries.next_due(conn, kind.name))
        except Exception:  # noqa: BLE001 - a failed look just means "look again at the next poll"
            return self._poll_seconds
        if due is None:
            return self._poll_seconds
        return min(self._poll_seconds, max(0.0, (due - self._clock.now()).total_seconds()))

    async def _claim(self, kind: JobKind) -> list[Job]:
        token = secrets.token_hex(16)
        now = self._clock.now()
        until = now + timedelta(seconds=kind.lease_seconds)
        rows = await self.store.write(lambda conn: job_queries.claim(conn, kind.name, token, now, until, kind.batch))
        return [Job(row["id"], row["kind"], row["subject"], row["payload"], row["attempts"], token) for row in rows]

    async def _run_batch(self, state: _KindState, claimed: list[Job]) -> None:
        kind = state.kind
        work = Work(self, claimed)
        error: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_leases, kind, claimed)
                try:
                    await kind.handler(work)
                except LeaseLost:
                    pass
                except StoreClosed:
                    return  # shutting down: the leases expire and the jobs run again
                except Exception as exc:  # the handler's failure: its unfinished jobs are retried
                    error = exc
                finally:
                    tg.cancel_scope.cancel()
        finally:
            state.running -= 1
            state.wakeup.set()
        left = [job for job in claimed if job.id not in work.done]
        if left:
            await self._retry_or_fail(kind, left, error)

    async def _keep_leases(self, kind: JobKind, claimed: list[Job]) -> None:
        ids = [job.id for job in claimed]
        while True:
            await anyio.sleep(kind.lease_seconds / 3)
            until = self._clock.now() + timedelta(seconds=kind.lease_seconds)
            try:
                await self.store.write(lambda conn: job_queries.extend(conn, ids, claimed[0].token, until))
            except StoreClosed:
                return

    async def _retry_or_fail(self, kind: JobKind, left: list[Job], error: BaseException | None) -> None:
        reason = f"{type(error).__name__}: {error}" if error is not None else "the handler did not complete it"
        if error is not None:
            log.warning("%d %s job(s) failed (%s); they are retried", len(left), kind.name, reason,
                        exc_info=not isinstance(error, OSError))
        now = self._clock.now()

        def write(conn: Connection) -> list[tuple[Event, Collection[str]]]:
            deliveries: list[tuple[Event, Collection[str]]] = []
            for job in left:
                if job.attempts < kind.max_attempts:
                    delay = min(BACKOFF_CAP_SECONDS, kind.backoff_seconds * 2 ** (job.attempts - 1))
                    job_queries.retry_later(conn, job.id, job.token, now + timedelta(seconds=delay), reason)
                elif job_queries.fail(conn, job.id, job.token, reason) and kind.given_up is not None:
                    deliveries += kind.given_up(conn, job, reason)
            return deliveries

        try:
            await self.store.write(write, on_commit=self._publish)
        except StoreClosed:
            pass  # shutting down: the leases expire and the jobs run again
