"""Workflows, their versions, runs (executions) and each run's per-node results."""

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, bindparam, func, insert, or_, select, update

from storage.schema import execution_nodes, executions, jobs, messages, workflow_versions, workflows

from ._prepared import Prepared

# -- workflows and versions -------------------------------------------------------------------------------


def insert_workflow(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(workflows).values(**row))


def get_workflow(conn: Connection, workflow_id: str) -> RowMapping | None:
    return conn.execute(select(workflows).where(workflows.c.id == workflow_id,
                                                workflows.c.deleted_at.is_(None))).mappings().first()


def update_workflow(conn: Connection, workflow_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(workflows).where(workflows.c.id == workflow_id).values(**values))


def workflows_of(conn: Connection, owner_id: str, *, before_id: str | None, limit: int) -> list[RowMapping]:
    """An owner's workflows, newest first."""
    query = select(workflows).where(workflows.c.owner_id == owner_id, workflows.c.deleted_at.is_(None))
    if before_id is not None:
        query = query.where(workflows.c.id < before_id)
    return list(conn.execute(query.order_by(workflows.c.id.desc()).limit(limit)).mappings())


def insert_version(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(workflow_versions).values(**row))


def get_version(conn: Connection, workflow_id: str, version: int) -> RowMapping | None:
    return conn.execute(select(workflow_versions).where(workflow_versions.c.workflow_id == workflow_id,
                                                        workflow_versions.c.version == version)).mappings().first()


def versions_of(conn: Connection, workflow_id: str, *, before: int | None, limit: int) -> list[RowMapping]:
    query = select(workflow_versions.c.version, workflow_versions.c.created_at, workflow_versions.c.restored_from)\
        .where(workflow_versions.c.workflow_id == workflow_id)
    if before is not None:
        query = query.where(workflow_versions.c.version < before)
    return list(conn.execute(query.order_by(workflow_versions.c.version.desc()).limit(limit)).mappings())


# -- executions -----------------------------------------------------------------------------------------


def insert_execution(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(executions).values(**row))


def get_execution(conn: Connection, execution_id: str) -> RowMapping | None:
    return conn.execute(select(executions).where(executions.c.id == execution_id)).mappings().first()


def lock_execution(conn: Connection, execution_id: str) -> RowMapping | None:
    """The execution, locked until the transaction ends (PostgreSQL; SQLite's writer is alone anyway):
    whoever wakes it (bumping `wake_seq`) and a run about to sleep take turns."""
    query = select(executions).where(executions.c.id == execution_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).mappings().first()


def update_execution(conn: Connection, execution_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(executions).where(executions.c.id == execution_id).values(**values))


def find_by_idempotency_key(conn: Connection, workflow_id: str, key: str) -> RowMapping | None:
    return conn.execute(select(executions).where(executions.c.workflow_id == workflow_id,
                                                 executions.c.idempotency_key == key)).mappings().first()


def executions_of(conn: Connection, owner_id: str, *, workflow_id: str | None, status: str | None,
                  trigger: str | None, since: datetime | None, until: datetime | None, before_id: str | None,
                  limit: int) -> list[RowMapping]:
    """An owner's runs (not a map's per-item runs), newest first, filtered."""
    query = select(executions).where(executions.c.owner_id == owner_id, executions.c.parent_execution_id.is_(None))
    for column, value in ((executions.c.workflow_id, workflow_id), (executions.c.status, status),
                          (executions.c.trigger, trigger)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(executions.c.created_at >= since)
    if until is not None:
        query = query.where(executions.c.created_at < until)
    if before_id is not None:
        query = query.where(executions.c.id < before_id)
    return list(conn.execute(query.order_by(executions.c.id.desc()).limit(limit)).mappings())


def unfinished_of_workflow(conn: Connection, workflow_id: str, finished: Collection[str]) -> list[str]:
    return list(conn.execute(select(executions.c.id).where(executions.c.workflow_id == workflow_id,
                                                           executions.c.status.not_in(finished))).scalars())


def children_of(conn: Connection, parent_id: str, node_id: str) -> list[RowMapping]:
    """A map node's per-item runs, by item."""
    return list(conn.execute(
        select(executions.c.id, executions.c.status, executions.c.output, executions.c.error, executions.c.item_index)
        .where(executions.c.parent_execution_id == parent_id, executions.c.parent_node_id == node_id)
        .order_by(executions.c.item_index)).mappings())


def window(conn: Connection, owner_id: str, workflow_id: str | None, since: datetime,
           until: datetime) -> list[RowMapping]:
    """What the stats are computed from: each run's workflow, status and times in the window."""
    query = select(executions.c.workflow_id, executions.c.status, executions.c.started_at, executions.c.finished_at)\
        .where(executions.c.owner_id == owner_id, executions.c.parent_execution_id.is_(None),
               executions.c.created_at >= since, executions.c.created_at < until)
    if workflow_id is not None:
        query = query.where(executions.c.workflow_id == workflow_id)
    return list(conn.execute(query).mappings())


# -- per-node results -----------------------------------------------------------------------------------


def nodes_of(conn: Connection, execution_id: str) -> list[RowMapping]:
    return list(conn.execute(select(execution_nodes).where(execution_nodes.c.execution_id == execution_id)
                             .order_by(execution_nodes.c.started_at, execution_nodes.c.node_id)).mappings())


def get_node(conn: Connection, execution_id: str, node_id: str) -> RowMapping | None:
    return conn.execute(select(execution_nodes).where(execution_nodes.c.execution_id == execution_id,
                                                      execution_nodes.c.node_id == node_id)).mappings().first()


def insert_node(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(insert(execution_nodes).values(**row))


def update_node(conn: Connection, execution_id: str, node_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(execution_nodes).where(execution_nodes.c.execution_id == execution_id,
                                               execution_nodes.c.node_id == node_id).values(**values))


def requests_for(conn: Connection, agent_id: str, *, limit: int) -> list[RowMapping]:
    """The waiting `ask` and `approval` steps addressed to an agent, oldest first, with their run's owner."""
    query = (select(execution_nodes, executions.c.owner_id, executions.c.workflow_id)
             .join(executions, executions.c.id == execution_nodes.c.execution_id)
             .where(execution_nodes.c.wait_agent_id == agent_id, execution_nodes.c.status == "waiting")
             .order_by(execution_nodes.c.started_at).limit(limit))
    return list(conn.execute(query).mappings())


def runs_waiting_on(conn: Connection, conversation_id: str, sender_id: str) -> list[str]:
    """The runs whose `ask` waits for a message from `sender_id` in the conversation (`waiting_on_reply`)."""
    return _waiting_on.column(conn, {"p_conversation_id": conversation_id, "p_sender_id": sender_id})


waiting_on_reply = (
    select(execution_nodes.c.execution_id)
    .join(executions, executions.c.id == execution_nodes.c.execution_id)
    .where(execution_nodes.c.wait_conversation_id == bindparam("p_conversation_id"),
           execution_nodes.c.status == "waiting",
           or_(execution_nodes.c.wait_agent_id == bindparam("p_sender_id"),
               and_(execution_nodes.c.wait_agent_id.is_(None), executions.c.owner_id != bindparam("p_sender_id"))))
)
"""The runs a message from `p_sender_id` in `p_conversation_id` answers: their `ask` waits for the asked
agent's reply, or for anyone's but the owner's when no one in particular was asked."""
# Prepared: it runs for every message sent on SQLite (see storage/queries/_prepared.py; on PostgreSQL
# the message's event reads it, events.append_message_event).
_waiting_on = Prepared(waiting_on_reply)


def wake(conn: Connection, execution_ids: Collection[str], job_kind: str, now: datetime) -> None:
    """Run these executions' jobs now, and tell a run about to sleep that something came (`wake_seq`)."""
    conn.execute(update(executions).where(executions.c.id.in_(execution_ids))
                 .values(wake_seq=executions.c.wake_seq + 1))
    conn.execute(update(jobs).where(jobs.c.kind == job_kind, jobs.c.subject.in_(execution_ids),
                                    jobs.c.run_at > now).values(run_at=now))


def count_unfinished(conn: Connection, owner_id: str, finished: Collection[str]) -> int:
    return int(conn.execute(select(func.count()).select_from(executions).where(
        executions.c.owner_id == owner_id, executions.c.status.not_in(finished))).scalar_one())


def reply_to_ask(conn: Connection, conversation_id: str, after_seq: int, from_id: str | None,
                 owner_id: str) -> RowMapping | None:
    """The first message after `after_seq` in the conversation from `from_id` (or from anyone but the
    workflow's owner), not deleted: the answer an `ask` waits for."""
    sender = messages.c.sender_id == from_id if from_id is not None else messages.c.sender_id != owner_id
    return conn.execute(
        select(messages.c.id, messages.c.seq, messages.c.sender_id, messages.c.body)
        .where(messages.c.conversation_id == conversation_id, messages.c.seq > after_seq, sender,
               messages.c.kind == "message", messages.c.deleted_at.is_(None))
        .order_by(messages.c.seq).limit(1)).mappings().first()
