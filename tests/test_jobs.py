"""hub.jobs.JobRunner on a real store: retries with backoff, giving up for good, and lease fencing."""

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio
import pytest
from sqlalchemy import Connection, select

from hub.clock import Clock
from hub.jobs import Job, JobKind, JobRunner, LeaseLost, Work
from protocol.events import Event
from storage.migrations import upgrade
from storage.queries import jobs as job_queries
from storage.schema import jobs
from storage.store import Store, create_store_engine

pytestmark = pytest.mark.anyio

WAIT = 10.0




@asynccontextmanager
async def runner_with(database_url: str, *kinds: JobKind,
                      published: list[Any] | None = None) -> AsyncIterator[JobRunner]:
    engine = create_store_engine(database_url)
    await anyio.to_thread.run_sync(upgrade, engine)
    store = Store(engine)
    runner = JobRunner(store, Clock(), (published if published is not None else []).extend, poll_seconds=0.05,
                       single_node=True)
    for kind in kinds:
        runner.register(kind)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(store.run)
            await tg.start(runner.run)
            yield runner
            tg.cancel_scope.cancel()
    finally:
        store.close()
        engine.dispose()


async def add_job(runner: JobRunner, kind: str, subject: str) -> None:
    now = Clock().now()
    await runner.store.write(lambda conn: job_queries.ensure(conn, kind, subject, {}, now, now))
    runner.notify(kind)


async def job_row(runner: JobRunner, kind: str, subject: str) -> Any:
    return await runner.store.read(lambda conn: conn.execute(
        select(jobs).where(jobs.c.kind == kind, jobs.c.subject == subject)).mappings().first())


async def test_a_failing_job_is_retried_then_given_up_in_the_transaction_that_fails_it(database_url: str) -> None:
    attempts: list[int] = []
    given_up: list[tuple[str, int, str, bool]] = []
    published: list[Any] = []

    async def always_fails(work: Work) -> None:
        attempts.append(work.jobs[0].attempts)
        raise RuntimeError("the disk is on fire")

    def record(conn: Connection, job: Job, reason: str) -> Collection[tuple[Event, Collection[str]]]:
        state = conn.execute(select(jobs.c.state).where(jobs.c.id == job.id)).scalar_one()
        given_up.append((job.subject, job.attempts, reason, state == job_queries.FAILED))
        return [("the event", ["agt_x"])]  # type: ignore[list-item]  # what the runner publishes, untouched

    kind = JobKind("test.flaky", always_fails, max_attempts=3, backoff_seconds=0.01, given_up=record)
    async with runner_with(database_url, kind, published=published) as runner:
        await add_job(runner, kind.name, "subject-1")
        with anyio.fail_after(WAIT):
            while not given_up:
                await anyio.sleep(0.02)
        row = await job_row(runner, kind.name, "subject-1")
    assert attempts == [1, 2, 3]
    assert given_up == [("subject-1", 3, "RuntimeError: the disk is on fire", True)]
    assert published == [("the event", ["agt_x"])]
    assert (row["state"], row["last_error"]) == (job_queries.FAILED, "RuntimeError: the disk is on fire")


async def test_a_job_whose_lease_was_taken_writes_nothing(database_url: str) -> None:
    outcome: list[str] = []
    stores: list[Store] = []

    async def loses_its_lease(work: Work) -> None:
        job = work.jobs[0]
        await stores[0].write(lambda conn: conn.execute(
            jobs.update().where(jobs.c.id == job.id).values(lease_token="someone-else")))
        try:
            await work.write(job, lambda conn: outcome.append("written"))
        except LeaseLost:
            outcome.append("lease lost")
            raise

    kind = JobKind("test.fenced", loses_its_lease, max_attempts=1)
    async with runner_with(database_url, kind) as runner:
        stores.append(runner.store)
        await add_job(runner, kind.name, "subject-2")
        with anyio.fail_after(WAIT):
            while not outcome:
                await anyio.sleep(0.02)
        await anyio.sleep(0.1)
        row = await job_row(runner, kind.name, "subject-2")
    assert outcome == ["lease lost"]
    assert (row["state"], row["lease_token"]) == (job_queries.PENDING, "someone-else")  # the new holder's still


async def test_the_next_due_job_is_the_earliest_no_one_holds(database_url: str) -> None:
    """What an idle runner waits for: a held job's lease is not it (its expiry is found at the next poll)."""
    engine = create_store_engine(database_url)
    await anyio.to_thread.run_sync(upgrade, engine)
    now = Clock().now()

    def check(conn: Connection) -> None:
        assert job_queries.next_due(conn, "test.due") is None
        job_queries.ensure(conn, "test.due", "held", {}, now - timedelta(seconds=30), now)
        job_queries.ensure(conn, "test.due", "later", {}, now + timedelta(seconds=60), now)
        job_queries.ensure(conn, "test.other", "sooner", {}, now + timedelta(seconds=5), now)
        held = job_queries.claim(conn, "test.due", "token", now, now + timedelta(seconds=10), limit=1)
        assert [row["subject"] for row in held] == ["held"]
        assert job_queries.next_due(conn, "test.due") == now + timedelta(seconds=60)

    try:
        with engine.begin() as conn:
            check(conn)
    finally:
        engine.dispose()
