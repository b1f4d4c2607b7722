"""Workflows: saving definitions (each save a version), starting runs, answering them, reading them.

A workflow is its owner's alone: anyone else gets `not_found` for it and its runs. Saving checks the
whole graph (`workflows.graph.check`) and that each `call` step's operation exists and needs a scope
the workflow was granted, within the saving credential's own. Running validates the input against
the workflow's JSON Schema, records the run with the version it runs, and queues it for the engine
(`workflows.engine`); the answer comes at once. An agent asked to approve (or asked by an `ask`)
answers with `workflows.respond`; its pending requests are listed by `workflows.requests`.
"""

import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any, Final

import anyio
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from sqlalchemy import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from protocol import ids
from protocol.errors import Conflict, Forbidden, InvalidRequest, NotFound, QuotaExceeded
from protocol.messages import SendMessageParams
from protocol.usage import LimitName
from protocol.workflows import (
    FINISHED,
    MAX_DEFINITION_BYTES,
    MAX_INPUT_BYTES,
    CallNode,
    CreateWorkflowParams,
    Definition,
    DeletedWorkflow,
    Execution,
    ExecutionPage,
    ExecutionStatus,
    ExecutionSummary,
    ListExecutionsParams,
    ListWorkflowsParams,
    MapNode,
    Node,
    NodeStatus,
    Responded,
    RespondParams,
    RestoreParams,
    RunWorkflowParams,
    StartedExecution,
    StatsParams,
    StatsResult,
    Trigger,
    UpdateWorkflowParams,
    VersionInfo,
    VersionPage,
    VersionsParams,
    Workflow,
    WorkflowPage,
    WorkflowRequest,
    WorkflowRequests,
    WorkflowStats,
    WorkflowSummary,
)
from storage.queries import workflows as workflow_queries
from storage.store import Store

from ..bus import EventBus, SubscriberLagged
from ..clock import Clock
from ..config import Settings
from ..jobs import JobRunner
from ..principal import Principal
from ..usage import Reservation, UsageMeter
from ..workflows import ADVANCE_JOB
from ..workflows.engine import Engine, enqueue, node_run
from ..workflows.graph import GraphError, check
from ..workflows.steps import STEP_OPERATIONS
from . import cursors
from .messages import MessageService

STATS_WINDOW: Final = timedelta(hours=24)

OperationScope = Callable[[str], str | None]
"""The scope an operation needs (None: open to anyone), or KeyError for an operation that does not exist."""


def _not_found(workflow_id: str) -> NotFound:
    return NotFound(f"no workflow {workflow_id!r}", {"workflow_id": workflow_id})


def _no_execution(execution_id: str) -> NotFound:
    return NotFound(f"no execution {execution_id!r}", {"execution_id": execution_id})


def workflow_of(row: RowMapping, definition: dict[str, Any]) -> Workflow:
    return Workflow(workflow_id=row["id"], owner_id=row["owner_id"], version=row["version"], definition=definition,
                    created_at=row["created_at"], updated_at=row["updated_at"])


def execution_of(row: RowMapping, nodes: list[RowMapping] | None = None) -> Execution:
    return Execution(execution_id=row["id"], workflow_id=row["workflow_id"], version=row["version"],
                     owner_id=row["owner_id"], status=ExecutionStatus(row["status"]), trigger=Trigger(row["trigger"]),
                     input=row["input"], output=row["output"], error=row["error"],
                     parent_execution_id=row["parent_execution_id"],
                     nodes=[node_run(node) for node in nodes or []], created_at=row["created_at"],
                     started_at=row["started_at"], finished_at=row["finished_at"], deadline_at=row["deadline_at"])


def summary_of(row: RowMapping) -> ExecutionSummary:
    return ExecutionSummary(execution_id=row["id"], workflow_id=row["workflow_id"], version=row["version"],
                            status=ExecutionStatus(row["status"]), trigger=Trigger(row["trigger"]), error=row["error"],
                            created_at=row["created_at"], finished_at=row["finished_at"])


class WorkflowService:
    def __init__(self, store: Store, clock: Clock, settings: Settings, bus: EventBus, jobs: JobRunner, engine: Engine,
                 messages: MessageService, operation_scope: OperationScope, usage: UsageMeter) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._bus = bus
        self._jobs = jobs
        self._engine = engine
        self._messages = messages
        self._operation_scope = operation_scope
        self._usage = usage

    # -- definitions ---------------------------------------------------------------------------------------

    def _checked(self, caller: Principal, params: Definition) -> dict[str, Any]:
        """The definition as stored, once everything in it is right.

        Raises:
            InvalidRequest: what is wrong, with `details.path` (e.g. `nodes[2].text`).
            Forbidden: a grant beyond the saving credential's scopes.
        """
        definition = params.model_dump(mode="json", by_alias=True, exclude={"workflow_id"}, exclude_defaults=True)
        definition.setdefault("nodes", [])
        if len(json.dumps(definition).encode()) > MAX_DEFINITION_BYTES:
            raise InvalidRequest(f"a workflow's definition is at most {MAX_DEFINITION_BYTES} bytes as JSON",
                                 {"max_bytes": MAX_DEFINITION_BYTES})
        try:
            check(params)
        except GraphError as error:
            raise InvalidRequest(error.message, {"path": error.path}) from None
        try:
            Draft202012Validator.check_schema(params.input_schema)
        except SchemaError as error:
            raise InvalidRequest(f"input_schema is not a valid JSON Schema: {error.message}",
                                 {"path": "input_schema"}) from None
        beyond = {scope.value for scope in params.scopes} - {scope.value for scope in caller.scopes}
        if beyond:
            raise Forbidden("a workflow may be granted only scopes your credential has",
                            {"scopes": sorted(beyond)})
        granted = {scope.value for scope in params.scopes}
        held = {scope.value for scope in caller.scopes}
        for path, node in _all_nodes(params.nodes, "nodes"):
            for operation in STEP_OPERATIONS.get(node.type, ()):
                if (needed := self._operation_scope(operation)) is not None and needed not in held:
                    raise Forbidden(f"a {node.type} step needs the {needed!r} scope, which your credential lacks",
                                    {"path": path, "required_scope": needed})
            if isinstance(node, CallNode):
                try:
                    needed = self._operation_scope(node.operation)
                except KeyError:
                    raise InvalidRequest(f"no operation named {node.operation!r}",
                                         {"path": f"{path}.operation"}) from None
                if needed is not None and needed not in granted:
                    raise InvalidRequest(f"{node.operation} needs the {needed!r} scope: add it to `scopes`",
                                         {"path": f"{path}.operation", "required_scope": needed})
        return definition

    async def create(self, caller: Principal, params: CreateWorkflowParams) -> Workflow:
        assert caller.agent_id is not None
        definition = self._checked(caller, params)
        now = self._clock.now()
        row = {"id": ids.new_id(ids.WORKFLOW), "owner_id": caller.agent_id, "name": params.name,
               "description": params.description, "version": 1, "created_at": now, "updated_at": now,
               "deleted_at": None}

        def write(conn: Connection) -> None:
            workflow_queries.insert_workflow(conn, row)
            workflow_queries.insert_version(conn, {"workflow_id": row["id"], "version": 1, "definition": definition,
                                                   "created_at": now, "restored_from": None})

        await self._store.write(write)
        return Workflow(workflow_id=row["id"], owner_id=caller.agent_id, version=1, definition=definition,
                        created_at=now, updated_at=now)

    async def update(self, caller: Principal, params: UpdateWorkflowParams) -> Workflow:
        assert caller.agent_id is not None
        definition = self._checked(caller, params)
        return await self._new_version(caller.agent_id, params.workflow_id, lambda conn, row: (definition, None))

    async def restore(self, caller_id: str, params: RestoreParams) -> Workflow:
        def old(conn: Connection, row: RowMapping) -> tuple[dict[str, Any], int]:
            version = workflow_queries.get_version(conn, row["id"], params.version)
            if version is None:
                raise NotFound(f"workflow {row['id']!r} has no version {params.version}",
                               {"workflow_id": row["id"], "version": params.version})
            return version["definition"], params.version

        return await self._new_version(caller_id, params.workflow_id, old)

    async def _new_version(self, caller_id: str, workflow_id: str,
                           definition_of: Callable[[Connection, RowMapping], tuple[dict[str, Any], int | None]]
                           ) -> Workflow:
        now = self._clock.now()

        def write(conn: Connection) -> Workflow:
            row = self._owned(conn, caller_id, workflow_id)
            definition, restored_from = definition_of(conn, row)
            version = row["version"] + 1
            workflow_queries.insert_version(conn, {"workflow_id": workflow_id, "version": version,
                                                   "definition": definition, "created_at": now,
                                                   "restored_from": restored_from})
            values = {"version": version, "name": definition["name"], "description": definition.get("description", ""),
                      "updated_at": now}
            workflow_queries.update_workflow(conn, workflow_id, values)
            return workflow_of({**row, **values}, definition)  # type: ignore[arg-type]

        return await self._store.write(write)

    @staticmethod
    def _owned(conn: Connection, caller_id: str, workflow_id: str) -> RowMapping:
        row = workflow_queries.get_workflow(conn, workflow_id)
        if row is None or row["owner_id"] != caller_id:
            raise _not_found(workflow_id)
        return row

    async def get(self, caller_id: str, workflow_id: str, version: int | None) -> Workflow:
        def read(conn: Connection) -> Workflow:
            row = self._owned(conn, caller_id, workflow_id)
            found = workflow_queries.get_version(conn, workflow_id, version or row["version"])
            if found is None:
                raise NotFound(f"workflow {workflow_id!r} has no version {version}",
                               {"workflow_id": workflow_id, "version": version})
            return workflow_of({**row, "version": found["version"]}, found["definition"])  # type: ignore[arg-type]

        return await self._store.read(read)

    async def list_workflows(self, caller_id: str, params: ListWorkflowsParams) -> WorkflowPage:
        position = cursors.decode(params.cursor, str)

        def read(conn: Connection) -> WorkflowPage:
            rows = workflow_queries.workflows_of(conn, caller_id, before_id=position[0] if position else None,
                                                 limit=params.limit + 1)
            more, rows = len(rows) > params.limit, rows[: params.limit]
            return WorkflowPage(items=[WorkflowSummary(workflow_id=row["id"], name=row["name"],
                                                       description=row["description"], version=row["version"],
                                                       updated_at=row["updated_at"]) for row in rows],
                                next_cursor=cursors.encode(rows[-1]["id"]) if more else None)

        return await self._store.read(read)

    async def versions(self, caller_id: str, params: VersionsParams) -> VersionPage:
        position = cursors.decode(params.cursor, int)

        def read(conn: Connection) -> VersionPage:
            self._owned(conn, caller_id, params.workflow_id)
            rows = workflow_queries.versions_of(conn, params.workflow_id, before=position[0] if position else None,
                                                limit=params.limit + 1)
            more, rows = len(rows) > params.limit, rows[: params.limit]
            return VersionPage(items=[VersionInfo(**row) for row in rows],
                               next_cursor=cursors.encode(rows[-1]["version"]) if more else None)

        return await self._store.read(read)

    async def delete(self, caller_id: str, workflow_id: str) -> DeletedWorkflow:
        """Delete a workflow: it is no longer listed or runnable, its unfinished runs are cancelled, and its
        runs stay readable as history."""
        now = self._clock.now()

        def write(conn: Connection) -> list[Any]:
            self._owned(conn, caller_id, workflow_id)
            workflow_queries.update_workflow(conn, workflow_id, {"deleted_at": now})
            deliveries = []
            for execution_id in workflow_queries.unfinished_of_workflow(conn, workflow_id, FINISHED):
                deliveries += self._engine.end(conn, execution_id, ExecutionStatus.CANCELLED, error={
                    "code": "cancelled", "message": "its workflow was deleted"})
            return deliveries

        await self._store.write(write, on_commit=self._bus.publish)
        return DeletedWorkflow(workflow_id=workflow_id)

    # -- runs ------------------------------------------------------------------------------------------------

    async def run(self, caller_id: str, params: RunWorkflowParams, trigger: Trigger = Trigger.MANUAL
                  ) -> StartedExecution:
        write = self.starter(caller_id, params, trigger, self._clock.now())
        with await self.counted_run(caller_id, params):
            try:
                started = await self._store.write(write)
            except IntegrityError:  # the same idempotency key, at the same moment, on another node
                started = await self._store.write(write)
        self._jobs.notify(ADVANCE_JOB)
        return started

    def starter(self, caller_id: str, params: RunWorkflowParams, trigger: Trigger, now: datetime
                ) -> Callable[[Connection], StartedExecution]:
        """The write that starts a run, for `run` or for another transaction to include (a schedule's fire
        record shares one with its run); once it commits, notify the runner of `ADVANCE_JOB`.

        It raises (having written nothing) what `run` does: the workflow is not the caller's, the input is too
        large or does not match its schema, too many runs are unfinished.
        """
        check_input_size(params.input)
        execution_id = ids.new_id(ids.EXECUTION)

        def write(conn: Connection) -> StartedExecution:
            row = self._owned(conn, caller_id, params.workflow_id)
            if params.idempotency_key is not None:
                first = workflow_queries.find_by_idempotency_key(conn, params.workflow_id, params.idempotency_key)
                if first is not None:
                    if first["input"] != params.input:
                        raise Conflict("this idempotency_key already started a run with other input; use a new "
                                       "key for a new run", {"field": "idempotency_key", "execution_id": first["id"]})
                    return StartedExecution(execution_id=first["id"], workflow_id=first["workflow_id"],
                                            version=first["version"])
            definition = check_input(conn, row, params.input)
            limit = self._settings.max_active_executions
            if (active := workflow_queries.count_unfinished(conn, caller_id, FINISHED)) >= limit:
                raise QuotaExceeded(f"at most {limit} runs may be unfinished at once; wait for some to end",
                                    quota="active_executions", limit=limit, used=active)
            timeout = definition.get("timeout_seconds", Definition.model_fields["timeout_seconds"].default)
            workflow_queries.insert_execution(conn, {
                "id": execution_id, "workflow_id": row["id"], "version": row["version"], "owner_id": caller_id,
                "status": ExecutionStatus.PENDING.value, "trigger": trigger.value, "input": params.input,
                "output": None, "error": None, "idempotency_key": params.idempotency_key,
                "parent_execution_id": None, "parent_node_id": None, "item_index": None, "wake_seq": 0,
                "created_at": now, "started_at": None, "finished_at": None,
                "deadline_at": now + timedelta(seconds=timeout)})
            enqueue(conn, execution_id, now)
            return StartedExecution(execution_id=execution_id, workflow_id=row["id"], version=row["version"])

        return write

    async def counted_run(self, caller_id: str, params: RunWorkflowParams) -> Reservation | nullcontext[None]:
        """The run counted against the caller's daily limit, unless its idempotency_key already started one
        (for `run` and for what starts a run of its own through `starter`, like a trigger).

        Raises:
            QuotaExceeded: the caller has started its limit of runs today.
        """
        if params.idempotency_key is not None and await self._store.read(
                lambda conn: workflow_queries.find_by_idempotency_key(conn, params.workflow_id,
                                                                      params.idempotency_key)) is not None:
            return nullcontext()
        reservation = await self.reserve_run(caller_id)
        reservation.check()
        return reservation

    async def reserve_run(self, caller_id: str) -> Reservation:
        """One run counted against the caller's daily limit, for a run `starter` makes: check it in the write,
        release it if no run was made."""
        return await self._usage.reserve(caller_id, LimitName.EXECUTIONS_PER_DAY)

    async def respond(self, caller: Principal, params: RespondParams) -> Responded:
        """Answer a waiting `approval` (approve or reject) or `ask` (a reply, sent as your message) addressed to
        you."""
        assert caller.agent_id is not None
        caller_id = caller.agent_id
        node = await self._store.read(lambda conn: workflow_queries.get_node(conn, params.execution_id,
                                                                             params.node_id))
        if node is None or node["wait_agent_id"] != caller_id or node["status"] != NodeStatus.WAITING:
            raise NotFound("nothing of that run waits for your answer",
                           {"execution_id": params.execution_id, "node_id": params.node_id})
        kind = node["waiting_for"]["kind"]
        if kind == "reply":
            if params.text is None:
                raise InvalidRequest("answer an ask with `text`", {"field": "text"})
            await self._messages.send(caller_id, SendMessageParams(
                conversation_id=node["waiting_for"]["conversation_id"], body=params.text,
                reply_to=node["waiting_for"]["message_id"]))
        else:
            if params.approve is None:
                raise InvalidRequest("answer an approval with `approve` (true or false)", {"field": "approve"})
            await self._store.write(lambda conn: self._record_response(conn, params, caller_id))
        self._jobs.notify(ADVANCE_JOB)
        answered = "replied" if kind == "reply" else ("approved" if params.approve else "rejected")
        return Responded(execution_id=params.execution_id, node_id=params.node_id, answered=answered)

    def _record_response(self, conn: Connection, params: RespondParams, caller_id: str) -> None:
        node = workflow_queries.get_node(conn, params.execution_id, params.node_id)
        if node is None or node["wait_agent_id"] != caller_id or node["status"] != NodeStatus.WAITING:
            raise Conflict("that step is no longer waiting", {"node_id": params.node_id})
        if node["response"] is not None:
            raise Conflict("that step has its answer already", {"node_id": params.node_id})
        workflow_queries.update_node(conn, params.execution_id, params.node_id, {"response": {
            "approved": params.approve, "by": caller_id, "text": params.text,
            "at": self._clock.now().isoformat()}})
        workflow_queries.wake(conn, [params.execution_id], ADVANCE_JOB, self._clock.now())

    async def requests(self, caller_id: str) -> WorkflowRequests:
        rows = await self._store.read(lambda conn: workflow_queries.requests_for(conn, caller_id, limit=100))
        return WorkflowRequests(items=[WorkflowRequest(
            execution_id=row["execution_id"], workflow_id=row["workflow_id"], node_id=row["node_id"],
            owner_id=row["owner_id"], kind="approval" if row["waiting_for"]["kind"] == "approval" else "ask",
            prompt=row["waiting_for"].get("prompt"), conversation_id=row["waiting_for"].get("conversation_id"),
            until=row["waiting_for"]["until"]) for row in rows])

    async def get_execution(self, caller_id: str, execution_id: str) -> Execution:
        def read(conn: Connection) -> Execution:
            row = workflow_queries.get_execution(conn, execution_id)
            if row is None or row["owner_id"] != caller_id:
                raise _no_execution(execution_id)
            return execution_of(row, workflow_queries.nodes_of(conn, execution_id))

        return await self._store.read(read)

    async def list_executions(self, caller_id: str, params: ListExecutionsParams) -> ExecutionPage:
        position = cursors.decode(params.cursor, str)

        def read(conn: Connection) -> ExecutionPage:
            rows = workflow_queries.executions_of(
                conn, caller_id, workflow_id=params.workflow_id, status=params.status.value if params.status else None,
                trigger=params.trigger.value if params.trigger else None, since=params.since, until=params.until,
                before_id=position[0] if position else None, limit=params.limit + 1)
            more, rows = len(rows) > params.limit, rows[: params.limit]
            return ExecutionPage(items=[summary_of(row) for row in rows],
                                 next_cursor=cursors.encode(rows[-1]["id"]) if more else None)

        return await self._store.read(read)

    async def cancel(self, caller_id: str, execution_id: str) -> Execution:
        def write(conn: Connection) -> list[Any]:
            row = workflow_queries.get_execution(conn, execution_id)
            if row is None or row["owner_id"] != caller_id or row["parent_execution_id"] is not None:
                raise _no_execution(execution_id)
            deliveries = self._engine.end(conn, execution_id, ExecutionStatus.CANCELLED,
                                          error={"code": "cancelled", "message": "cancelled by its owner"})
            workflow_queries.wake(conn, [execution_id], ADVANCE_JOB, self._clock.now())
            return deliveries

        await self._store.write(write, on_commit=self._bus.publish)
        self._jobs.notify(ADVANCE_JOB)
        return await self.get_execution(caller_id, execution_id)

    async def stats(self, caller_id: str, params: StatsParams) -> StatsResult:
        until = params.until or self._clock.now()
        since = params.since or until - STATS_WINDOW
        rows = await self._store.read(lambda conn: workflow_queries.window(conn, caller_id, params.workflow_id,
                                                                           since, until))
        by_workflow: dict[str, list[RowMapping]] = defaultdict(list)
        for row in rows:
            by_workflow[row["workflow_id"]].append(row)
        stats = []
        for workflow_id, runs in sorted(by_workflow.items()):
            counts: dict[str, int] = defaultdict(int)
            for row in runs:
                counts[row["status"]] += 1
            finished = sum(counts.get(status, 0) for status in FINISHED)
            durations = sorted((row["finished_at"] - row["started_at"]).total_seconds() * 1000
                               for row in runs if row["finished_at"] and row["started_at"])
            stats.append(WorkflowStats(workflow_id=workflow_id, counts=dict(counts),
                                       success_rate=round(counts.get(ExecutionStatus.COMPLETED, 0) / finished, 4)
                                       if finished else None,
                                       duration_p50_ms=_percentile(durations, 0.5),
                                       duration_p95_ms=_percentile(durations, 0.95)))
        return StatsResult(since=since, until=until, workflows=stats)

    async def wait_for_end(self, caller_id: str, execution_id: str, seconds: float) -> Execution:
        """The run once it has ended, or as it stands after `seconds` (for callers that would rather wait)."""
        with self._bus.subscribe(caller_id) as subscription, anyio.move_on_after(seconds):
            while (execution := await self.get_execution(caller_id, execution_id)).status not in FINISHED:
                with anyio.move_on_after(1.0):  # a look at the store now and then, whatever the bus says
                    try:
                        await subscription.wait()
                    except SubscriberLagged:
                        await anyio.sleep(1.0)
                while subscription.receive_nowait() is not None:
                    pass
            return execution
        return await self.get_execution(caller_id, execution_id)


def _all_nodes(nodes: list[Node], prefix: str) -> list[tuple[str, Node]]:
    found: list[tuple[str, Node]] = []
    for index, node in enumerate(nodes):
        found.append((f"{prefix}[{index}]", node))
        if isinstance(node, MapNode):
            found += _all_nodes(node.nodes, f"{prefix}[{index}].nodes")
    return found


def check_input_size(value: Any) -> None:
    if len(json.dumps(value).encode()) > MAX_INPUT_BYTES:
        raise InvalidRequest(f"a run's input is at most {MAX_INPUT_BYTES} bytes as JSON",
                             {"field": "input", "max_bytes": MAX_INPUT_BYTES})


def check_input(conn: Connection, workflow: Mapping[str, Any], value: Any) -> dict[str, Any]:
    """The definition of `workflow`'s current version, once `value` satisfies its `input_schema`: what a
    run (or a schedule, which will start runs with it) is given as input.

    Raises:
        InvalidRequest: `value` does not satisfy it.
    """
    version = workflow_queries.get_version(conn, workflow["id"], workflow["version"])
    assert version is not None
    definition: dict[str, Any] = version["definition"]
    _validate_input(definition.get("input_schema", {"type": "object"}), value)
    return definition


def _validate_input(schema: dict[str, Any], value: Any) -> None:
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda error: list(error.absolute_path))
    if errors:
        raise InvalidRequest("the input does not match the workflow's input_schema", {"errors": [
            {"field": "input" + "".join(f"[{part!r}]" if isinstance(part, int) else f".{part}"
                                        for part in error.absolute_path), "message": error.message}
            for error in errors[:10]]})


def _percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[max(1, math.ceil(fraction * len(ordered))) - 1], 1)

