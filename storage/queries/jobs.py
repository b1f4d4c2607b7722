"""Durable background jobs: a row per job, claimed with a lease, deleted when done.

A job is written in the same transaction as the change that needs it (a memory to embed, a document
to ingest), so it exists exactly when that change committed. A worker claims due jobs by setting a
fresh `lease_token` and `lease_until`; every later write about the job (its result, its release,
its deletion) names the token, so a worker that lost its lease (it paused past it and another
claimed the job) changes nothing (docs/design.md §9, leases that fence).
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, bindparam, delete, func, or_, select, update

from storage.schema import jobs

from ._prepared import PreparedUpsert

PENDING = "pending"
FAILED = "failed"


def ensure(conn: Connection, kind: str, subject: str, payload: dict[str, Any], run_at: datetime, now: datetime) -> None:
    """A pending job of `kind` about `subject` due at `run_at`: made, or (if one exists) due again with
    this payload. The job's unique (kind, subject) makes this an upsert, so retries make no twins."""
    ensure_all(conn, kind, [subject], payload, run_at, now)


def ensure_all(conn: Connection, kind: str, subjects: Sequence[str], payload: dict[str, Any], run_at: datetime,
               now: datetime) -> None:
    """`ensure` for each of `subjects`, in one statement."""
    if not subjects:
        return
    _ensure.on(conn).execute_many(conn, [{"kind": kind, "subject": subject, "payload": payload, "state": PENDING,
                                          "run_at": run_at, "attempts": 0, "created_at": now} for subject in subjects])


def _build_ensure(dialect_insert: Any) -> Any:
    statement = dialect_insert(jobs)
    return statement.on_conflict_do_update(
        index_elements=[jobs.c.kind, jobs.c.subject],
        # A worker on the old version of the job loses its lease: its result is of what was, not of what is.
        set_={"payload": statement.excluded.payload, "state": PENDING, "run_at": statement.excluded.run_at,
              "attempts": 0, "last_error": None, "lease_token": None, "lease_until": None},
    )


# Prepared: it runs for every memory written, document added and webhook delivery (storage/queries/_prepared.py).
_ensure = PreparedUpsert(_build_ensure,
                         column_keys=("kind", "subject", "payload", "state", "run_at", "attempts", "created_at"))


def claim(
    conn: Connection, kind: str, token: str, now: datetime, lease_until: datetime, limit: int
) -> list[RowMapping]:
    """Lease up to `limit` due jobs of `kind` to `token` (pending and due, or with an expired lease)."""
    due = (
        select(jobs.c.id)
        .where(jobs.c.kind == kind, jobs.c.state == PENDING, jobs.c.run_at <= now,
               or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < now))
        .order_by(jobs.c.run_at, jobs.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)  # nodes claiming at once take different jobs
    ids = list(conn.execute(due).scalars())
    if not ids:
        return []
    return list(conn.execute(
        update(jobs).where(jobs.c.id.in_(ids))
        .values(lease_token=token, lease_until=lease_until, attempts=jobs.c.attempts + 1)
        .returning(jobs)
    ).mappings())


def held(conn: Connection, job_id: int, token: str) -> bool:
    """Whether the job still exists and is leased to `token` (check this first in a write of its result)."""
    return job_id in held_of(conn, [job_id], token)


def held_of(conn: Connection, job_ids: Sequence[int], token: str) -> set[int]:
    """Those of the jobs that still exist and are leased to `token`."""
    return set(conn.execute(select(jobs.c.id).where(jobs.c.id.in_(job_ids), jobs.c.lease_token == token)).scalars())


def extend(conn: Connection, job_ids: Sequence[int], token: str, lease_until: datetime) -> int:
    """Extend the leases of those jobs still held with `token`; how many were."""
    result = conn.execute(update(jobs).where(jobs.c.id.in_(job_ids), jobs.c.lease_token == token)
                          .values(lease_until=lease_until))
    return int(result.rowcount)


def finish(conn: Connection, job_ids: Sequence[int], token: str) -> int:
    """Delete done jobs, those still held with `token`; how many were."""
    return int(conn.execute(delete(jobs).where(jobs.c.id.in_(job_ids), jobs.c.lease_token == token)).rowcount)


def defer(conn: Connection, job_id: int, token: str, run_at: datetime) -> bool:
    """Put a held job back to run again at `run_at`, its attempts counted afresh (it did its work so far)."""
    return conn.execute(
        update(jobs).where(jobs.c.id == job_id, jobs.c.lease_token == token)
        .values(lease_token=None, lease_until=None, run_at=run_at, attempts=0, last_error=None)
    ).rowcount == 1


def retry_later(conn: Connection, job_id: int, token: str, run_at: datetime, error: str) -> bool:
    return conn.execute(
        update(jobs).where(jobs.c.id == job_id, jobs.c.lease_token == token)
        .values(lease_token=None, lease_until=None, run_at=run_at, last_error=error[:2000])
    ).rowcount == 1


def fail(conn: Connection, job_id: int, token: str, error: str) -> bool:
    """Give up on a job: it stays, failed, with its error, for an operator to see."""
    return conn.execute(
        update(jobs).where(jobs.c.id == job_id, jobs.c.lease_token == token)
        .values(state=FAILED, lease_token=None, lease_until=None, last_error=error[:2000])
    ).rowcount == 1


def cancel(conn: Connection, kind: str, subject: str) -> None:
    """Drop the job of `kind` about `subject`, whoever holds it (its subject is gone)."""
    conn.execute(delete(jobs).where(jobs.c.kind == kind, jobs.c.subject == subject))


def next_due(conn: Connection, kind: str) -> datetime | None:
    """When the earliest pending job of `kind` that no one holds is due, None without any.

    Read in `ix_jobs_due` order, stopping at the first job without a lease: the earliest of every
    pending job's lease expiry or due time, as this was, read them all (3.7 ms at 20,000 jobs waiting
    to be retried, at every wake-up). A lease that expires is found at the runner's next poll.
    """
    return conn.execute(_next_due, {"kind": kind}).scalar()


_next_due = (
    select(jobs.c.run_at)
    .where(jobs.c.state == PENDING, jobs.c.kind == bindparam("kind"), jobs.c.lease_until.is_(None))
    .order_by(jobs.c.run_at)
    .limit(1)
)


def counts(conn: Connection) -> dict[tuple[str, str], int]:
    """How many jobs of each (kind, state)."""
    query = select(jobs.c.kind, jobs.c.state, func.count()).group_by(jobs.c.kind, jobs.c.state)
    return {(kind, state): int(count) for kind, state, count in conn.execute(query)}


def pending_of(conn: Connection, kind: str, subjects: Sequence[str]) -> set[str]:
    """Those of `subjects` with a pending job of `kind`."""
    if not subjects:
        return set()
    query = select(jobs.c.subject).where(and_(jobs.c.kind == kind, jobs.c.state == PENDING,
                                              jobs.c.subject.in_(subjects)))
    return set(conn.execute(query).scalars())
