"""The workflow engine: runs advance as durable jobs, one step result committed at a time.

Each unfinished run has one `workflows.advance` job. Its handler loads the run, starts what is
ready (`graph.next_steps`), and commits every step's start (with its attempt number) before the step
acts and its result before anything later starts. So after a crash the run resumes from its last
commit: a step that had started runs its same attempt again, and the idempotency key of that attempt
(`steps.StepContext.key`) keeps its side effect from happening twice.

A run that waits (a reply to an `ask`, a response to an `approval`, a `delay`, a `map`'s item runs, a
retry's backoff) is put back as a job due when its earliest wait ends, and holds no task meanwhile.
What it waits for wakes it sooner: a message in the conversation of an `ask` (see `MessageService`),
`workflows.respond`, an item run finishing. Each wake bumps the run's `wake_seq`, and a run about to
sleep reads it again (locked) in the transaction that puts it to sleep, so no wake-up is lost.

Every write is made only while the job's lease holds (`Work.write`): on several nodes, a node that
paused past its lease changes nothing, and no step runs on two nodes at once. A `map` runs each item
as a run of its own (`parent_execution_id`), of the map's sub-graph.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import anyio
from sqlalchemy import Connection, RowMapping

from protocol import ids
from protocol.events import EventType
from protocol.identity import AGENT_SCOPES
from protocol.workflows import (
    FINISHED,
    Definition,
    ExecutionEvent,
    ExecutionStatus,
    MapNode,
    Node,
    NodeRun,
    NodeStatus,
    Trigger,
)
from storage.queries import jobs as job_queries
from storage.queries import workflows as workflow_queries
from storage.store import Store

from ..bus import EventBus
from ..clock import Clock
from ..jobs import Job, JobKind, JobRunner, LeaseLost, Work
from ..services.timeline import Delivery, emit
from . import ADVANCE_JOB
from .expressions import ExpressionError, render_value
from .graph import Graph
from .steps import Dispatch, Fetch, StepContext, StepError, Wait, run_step

STEP_SCOPES: Final = frozenset(scope.value for scope in AGENT_SCOPES)
"""What the built-in steps act with (as the owner); `call` steps get only the workflow's grants."""


class RunEnded(Exception):
    """The run was cancelled (or finished) while a step was in flight: stop, writing nothing more."""


@dataclass
class Run:
    """A run as loaded: its row, the graph it runs (a map item's sub-graph for an item run), its nodes."""

    row: dict[str, Any]
    graph: Graph
    output: Any
    """The template of the run's output (a map's `output` for an item run); None: the last node's."""
    scopes: frozenset[str]
    """What its `call` steps may do: the workflow's grants."""
    nodes: dict[str, dict[str, Any]]

    @property
    def id(self) -> str:
        return str(self.row["id"])

    @property
    def top_level(self) -> bool:
        return self.row["parent_execution_id"] is None

    def data(self) -> dict[str, Any]:
        """What templates and expressions read."""
        given = self.row["input"]
        data = {"steps": {node_id: node["output"] for node_id, node in self.nodes.items()
                          if node["status"] in (NodeStatus.COMPLETED, NodeStatus.FAILED)},
                "execution": {"id": self.id, "workflow_id": self.row["workflow_id"], "trigger": self.row["trigger"],
                              "started_at": self.row["started_at"].isoformat() if self.row["started_at"] else None}}
        if self.top_level:
            return {**data, "input": given}
        return {**data, "input": given["input"], "item": given["item"], "index": given["index"]}

    def states(self) -> dict[str, tuple[NodeStatus, str | None, bool]]:
        return {node_id: (NodeStatus(node["status"]), node["branch"], self._goes_on(node_id))
                for node_id, node in self.nodes.items()}

    def _goes_on(self, node_id: str) -> bool:
        return self.graph.node(node_id).continue_on_error


def execution_event(row: RowMapping | dict[str, Any]) -> ExecutionEvent:
    return ExecutionEvent(execution_id=row["id"], workflow_id=row["workflow_id"], version=row["version"],
                          status=ExecutionStatus(row["status"]), trigger=Trigger(row["trigger"]),
                          output=row["output"], error=row["error"])


def node_run(row: RowMapping | dict[str, Any]) -> NodeRun:
    return NodeRun(node_id=row["node_id"], status=NodeStatus(row["status"]), attempts=row["attempts"],
                   output=row["output"], error=row["error"], waiting_for=_public(row["waiting_for"]),
                   started_at=row["started_at"], finished_at=row["finished_at"], duration_ms=row["duration_ms"])


def _public(waiting_for: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a waiting step shows: a map's items are its own business (they can be long)."""
    if waiting_for is None:
        return None
    return {key: value for key, value in waiting_for.items() if key != "items"}


def load_run(conn: Connection, execution_id: str) -> Run | None:
    row = workflow_queries.get_execution(conn, execution_id)
    if row is None:
        return None
    graph, output, scopes = graph_of(conn, row)
    return Run(dict(row), graph, output, scopes, {node["node_id"]: dict(node)
                                                  for node in workflow_queries.nodes_of(conn, execution_id)})


def graph_of(conn: Connection, row: RowMapping | dict[str, Any]) -> tuple[Graph, Any, frozenset[str]]:
    """The graph a run runs, its output template and the workflow's grants: the workflow version's, or
    (for a map's item run) the sub-graph of its parent's map node."""
    if row["parent_execution_id"] is None:
        version = workflow_queries.get_version(conn, row["workflow_id"], row["version"])
        assert version is not None
        definition = Definition.model_validate(version["definition"])
        return (Graph(definition.nodes, definition.edges), definition.output,
                frozenset(scope.value for scope in definition.scopes))
    parent = workflow_queries.get_execution(conn, row["parent_execution_id"])
    assert parent is not None
    parent_graph, _, scopes = graph_of(conn, parent)
    node = parent_graph.node(row["parent_node_id"])
    assert isinstance(node, MapNode)
    return Graph(node.nodes, node.edges), node.output, scopes


class Engine:
    def __init__(self, store: Store, clock: Clock, bus: EventBus, jobs: JobRunner,
                 dispatch_as: Callable[[str, str, frozenset[str]], Dispatch], fetch: Fetch,
                 concurrency: int, lease_seconds: float) -> None:
        self._store = store
        self._clock = clock
        self._bus = bus
        self._jobs = jobs
        self._dispatch_as = dispatch_as
        self._fetch = fetch
        self._concurrency = concurrency
        self._lease_seconds = lease_seconds

    def job(self) -> JobKind:
        return JobKind(ADVANCE_JOB, self._advance, concurrency=self._concurrency, lease_seconds=self._lease_seconds,
                       max_attempts=5, given_up=self._given_up)

    # -- the job -----------------------------------------------------------------------------------------

    async def _advance(self, work: Work) -> None:
        job = work.jobs[0]
        run = await self._store.read(lambda conn: load_run(conn, job.subject))
        if run is None or run.row["status"] in FINISHED:
            await work.complete([job])
            return
        seen_wake = run.row["wake_seq"]
        try:
            if self._clock.now() >= run.row["deadline_at"]:
                await self._finish(work, job, run, ExecutionStatus.TIMED_OUT,
                                   error={"code": "timed_out", "message": "the run passed its time limit"})
                return
            if run.row["status"] == ExecutionStatus.PENDING:
                await self._write(work, job, run, lambda conn: self._started(conn, run))
            while await self._step(work, job, run):
                pass
            failed = [node_id for node_id, node in run.nodes.items()
                      if node["status"] == NodeStatus.FAILED and not run.graph.node(node_id).continue_on_error]
            if failed:
                node = run.nodes[failed[0]]
                await self._finish(work, job, run, ExecutionStatus.FAILED,
                                   error={**(node["error"] or {}), "node_id": failed[0]})
            elif len(run.nodes) == len(run.graph.nodes) and all(
                    node["status"] in (NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED)
                    for node in run.nodes.values()):
                await self._complete(work, job, run)
            else:
                await self._sleep(work, job, run, seen_wake)
        except RunEnded:
            await work.complete([job])

    async def _step(self, work: Work, job: Job, run: Run) -> bool:
        """One round: settle what waited, skip what cannot run, run what is ready. Whether anything moved."""
        now = self._clock.now()
        moved = False
        for node_id, node in list(run.nodes.items()):
            if node["status"] == NodeStatus.WAITING:
                moved |= await self._check_wait(work, job, run, node_id, now)
            elif node["status"] == NodeStatus.RETRYING and node["retry_at"] <= now:
                moved = True
                await self._attempt(work, job, run, node_id, node["attempts"] + 1)
            elif node["status"] == NodeStatus.RUNNING:  # started before a crash: the same attempt again
                moved = True
                await self._attempt(work, job, run, node_id, node["attempts"])
        if any(node["status"] == NodeStatus.FAILED and not run.graph.node(node_id).continue_on_error
               for node_id, node in run.nodes.items()):
            return False
        ready, skipped = run.graph.next_steps(run.states())
        if skipped:
            await self._write(work, job, run, lambda conn: self._skip(conn, run, skipped))
            moved = True
        if ready:
            moved = True
            async with anyio.create_task_group() as tg:  # parallel branches run at once
                for node_id in ready:
                    tg.start_soon(self._attempt, work, job, run, node_id, 1)
        return moved

    # -- one attempt of one node ---------------------------------------------------------------------------

    async def _attempt(self, work: Work, job: Job, run: Run, node_id: str, attempt: int) -> None:
        node = run.graph.node(node_id)
        now = self._clock.now()
        started = time.monotonic()
        await self._write(work, job, run, lambda conn: self._node_started(conn, run, node_id, attempt, now))
        owner = run.row["owner_id"]
        context = StepContext(run.id, owner, node_id, attempt, run.data(), now,
                              self._dispatch_as(owner, run.id, STEP_SCOPES),
                              self._dispatch_as(owner, run.id, run.scopes),
                              self._fetch)
        try:
            with anyio.fail_after(node.timeout_seconds):
                outcome = await run_step(node, context)
        except StepError as error:
            await self._failed(work, job, run, node, attempt, error, started)
            return
        except TimeoutError:
            await self._failed(work, job, run, node, attempt, StepError(
                "timed_out", f"the step took longer than {node.timeout_seconds:g} s"), started)
            return
        if isinstance(outcome, Wait):
            await self._write(work, job, run, lambda conn: self._waiting(conn, run, node, outcome))
        else:
            await self._write(work, job, run, lambda conn: self._node_done(
                conn, run, node_id, NodeStatus.COMPLETED, output=outcome.output, branch=outcome.branch,
                duration_ms=(time.monotonic() - started) * 1000))

    async def _failed(self, work: Work, job: Job, run: Run, node: Node, attempt: int, error: StepError,
                      started: float) -> None:
        duration_ms = (time.monotonic() - started) * 1000
        if error.retryable and attempt < node.retry.max_attempts:
            retry_at = self._clock.now() + timedelta(seconds=node.retry.backoff_seconds * 2 ** (attempt - 1))
            await self._write(work, job, run, lambda conn: self._retrying(conn, run, node.id, error, retry_at))
            return
        output = {"error": error.as_json()} if node.continue_on_error else None
        await self._write(work, job, run, lambda conn: self._node_done(
            conn, run, node.id, NodeStatus.FAILED, output=output, error=error.as_json(), duration_ms=duration_ms))

    # -- waiting ---------------------------------------------------------------------------------------------

    async def _check_wait(self, work: Work, job: Job, run: Run, node_id: str, now: datetime) -> bool:
        node = run.nodes[node_id]
        waiting_for = node["waiting_for"]
        kind = waiting_for["kind"]
        if kind == "map":
            return await self._check_map(work, job, run, node_id)
        until = datetime.fromisoformat(waiting_for["until"])
        result: Any = None
        if kind == "reply":
            reply = await self._store.read(lambda conn: workflow_queries.reply_to_ask(
                conn, waiting_for["conversation_id"], waiting_for["after_seq"], waiting_for["from_id"],
                run.row["owner_id"]))
            if reply is not None:
                result = {"text": reply["body"], "message_id": reply["id"], "sender_id": reply["sender_id"],
                          "seq": reply["seq"]}
        elif kind == "approval" and node["response"] is not None:
            result = node["response"]
        elif kind == "delay" and now >= until:
            result = {"waited_until": waiting_for["until"]}
        if result is not None:
            await self._write(work, job, run, lambda conn: self._node_done(
                conn, run, node_id, NodeStatus.COMPLETED, output=result, duration_ms=_ms_since(node, now)))
            return True
        if now >= until:
            error = StepError("timed_out", f"no {'reply' if kind == 'reply' else 'response'} in time", retryable=False)
            await self._write(work, job, run, lambda conn: self._node_done(
                conn, run, node_id, NodeStatus.FAILED, error=error.as_json(),
                output={"error": error.as_json()} if run.graph.node(node_id).continue_on_error else None,
                duration_ms=_ms_since(node, now)))
            return True
        return False

    async def _check_map(self, work: Work, job: Job, run: Run, node_id: str) -> bool:
        """Start item runs while there are free slots; when all have ended, the map ends with their outputs."""
        node = run.nodes[node_id]
        items, concurrency = node["waiting_for"]["items"], node["waiting_for"]["concurrency"]
        children = await self._store.read(lambda conn: workflow_queries.children_of(conn, run.id, node_id))
        failed = next((child for child in children if child["status"] in (
            ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT, ExecutionStatus.CANCELLED)), None)
        now = self._clock.now()
        if failed is not None:
            error = StepError("item_failed", f"item {failed['item_index']} failed", retryable=False,
                              details={"index": failed["item_index"], "error": failed["error"]})
            await self._write(work, job, run, lambda conn: self._node_done(
                conn, run, node_id, NodeStatus.FAILED, error=error.as_json(), duration_ms=_ms_since(node, now),
                output={"error": error.as_json()} if run.graph.node(node_id).continue_on_error else None,
                cancel_children=True))
            return True
        if len(children) == len(items) and all(child["status"] == ExecutionStatus.COMPLETED for child in children):
            outputs = [child["output"] for child in children]
            await self._write(work, job, run, lambda conn: self._node_done(
                conn, run, node_id, NodeStatus.COMPLETED, output=outputs, duration_ms=_ms_since(node, now)))
            return True
        running = sum(1 for child in children if child["status"] not in FINISHED)
        start = range(len(children), min(len(items), len(children) + concurrency - running))
        if start:
            await self._write(work, job, run, lambda conn: self._start_items(conn, run, node_id, items, start))
            self._jobs.notify(ADVANCE_JOB)
        return False

    async def _sleep(self, work: Work, job: Job, run: Run, seen_wake: int) -> None:
        """Put the run back as a job due when its earliest wait ends (or now, if woken since it loaded)."""
        ends = [run.row["deadline_at"]]
        for node in run.nodes.values():
            if node["status"] == NodeStatus.WAITING and node["waiting_for"].get("until"):
                ends.append(datetime.fromisoformat(node["waiting_for"]["until"]))
            elif node["status"] == NodeStatus.RETRYING:
                ends.append(node["retry_at"])

        def write(conn: Connection) -> tuple[datetime, list[Delivery]]:
            row = workflow_queries.lock_execution(conn, run.id)
            assert row is not None
            now = self._clock.now()
            if row["status"] in FINISHED:
                return now, []
            if row["status"] != ExecutionStatus.WAITING:
                workflow_queries.update_execution(conn, run.id, {"status": ExecutionStatus.WAITING.value})
            return (now if row["wake_seq"] != seen_wake else min(ends)), []

        await work.defer(job, write)

    # -- finishing ---------------------------------------------------------------------------------------------

    async def _complete(self, work: Work, job: Job, run: Run) -> None:
        data = run.data()
        try:
            if run.output is not None:
                output = render_value(run.output, data)
            else:
                sinks = [node_id for node_id in run.graph.sinks() if run.nodes[node_id]["status"] != NodeStatus.SKIPPED]
                output = data["steps"].get(sinks[0]) if len(sinks) == 1 else {
                    node_id: data["steps"].get(node_id) for node_id in sinks}
        except ExpressionError as error:
            await self._finish(work, job, run, ExecutionStatus.FAILED,
                               error={"code": "expression", "message": f"output: {error}"})
            return
        await self._finish(work, job, run, ExecutionStatus.COMPLETED, output=output)

    async def _finish(self, work: Work, job: Job, run: Run, status: ExecutionStatus, *, output: Any = None,
                      error: dict[str, Any] | None = None) -> None:
        def write(conn: Connection, held: list[Job]) -> list[Delivery]:
            return self.end(conn, run.id, status, output=output, error=error)

        await work.complete([job], write, on_commit=self._bus.publish)
        self._jobs.notify(ADVANCE_JOB)  # a parent map waits on this one

    def end(self, conn: Connection, execution_id: str, status: ExecutionStatus, *, output: Any = None,
            error: dict[str, Any] | None = None) -> list[Delivery]:
        """Finish a run (and, if it ends early, its unfinished item runs); wake the map that waits on it."""
        row = workflow_queries.lock_execution(conn, execution_id)
        if row is None or row["status"] in FINISHED:
            return []
        now = self._clock.now()
        values = {"status": status.value, "output": output, "error": error, "finished_at": now}
        workflow_queries.update_execution(conn, execution_id, values)
        if status != ExecutionStatus.COMPLETED:
            for node in workflow_queries.nodes_of(conn, execution_id):
                if node["status"] in (NodeStatus.WAITING, NodeStatus.RETRYING, NodeStatus.RUNNING):
                    workflow_queries.update_node(conn, execution_id, node["node_id"], _not_waiting(
                        {"status": NodeStatus.FAILED.value, "finished_at": now,
                         "error": {"code": status.value, "message": f"the run ended: {status.value}"}}))
                if node["waiting_for"] and node["waiting_for"].get("kind") == "map":
                    for child in workflow_queries.children_of(conn, execution_id, node["node_id"]):
                        self.end(conn, child["id"], ExecutionStatus.CANCELLED,
                                 error={"code": "cancelled", "message": "the run it belongs to ended"})
        if row["parent_execution_id"] is not None:
            workflow_queries.wake(conn, [row["parent_execution_id"]], ADVANCE_JOB, now)
            return []
        event = {ExecutionStatus.COMPLETED: EventType.EXECUTION_COMPLETED, ExecutionStatus.FAILED:
                 EventType.EXECUTION_FAILED, ExecutionStatus.CANCELLED: EventType.EXECUTION_CANCELLED,
                 ExecutionStatus.TIMED_OUT: EventType.EXECUTION_TIMED_OUT}[status]
        return [self._event(conn, event, {**row, **values})]

    def _given_up(self, conn: Connection, job: Job, reason: str) -> list[Delivery]:
        """The engine itself failed on this run every time (a bug, or the store): the run fails with why."""
        return self.end(conn, job.subject, ExecutionStatus.FAILED,
                        error={"code": "internal", "message": f"the engine failed on this run: {reason}"})

    # -- writes ------------------------------------------------------------------------------------------------

    async def _write(self, work: Work, job: Job, run: Run, write: Callable[[Connection], list[Delivery]]) -> None:
        """A write of this run's progress: only while the lease holds and the run has not ended."""

        def guarded(conn: Connection) -> list[Delivery]:
            row = workflow_queries.lock_execution(conn, run.id)
            if row is None or row["status"] in FINISHED:
                raise RunEnded(run.id)
            return write(conn)

        try:
            await work.write(job, guarded, on_commit=self._bus.publish)
        except LeaseLost:
            raise RunEnded(run.id) from None

    def _event(self, conn: Connection, type: EventType, row: dict[str, Any] | RowMapping,
               node: dict[str, Any] | None = None) -> Delivery:
        return emit(conn, type, None, actor_id=row["owner_id"], now=self._clock.now(), to=[row["owner_id"]],
                    subject_id=row["id"], execution=execution_event(row), node=node_run(node) if node else None)

    def _started(self, conn: Connection, run: Run) -> list[Delivery]:
        now = self._clock.now()
        run.row.update(status=ExecutionStatus.RUNNING.value, started_at=now)
        workflow_queries.update_execution(conn, run.id, {"status": ExecutionStatus.RUNNING.value, "started_at": now})
        return [self._event(conn, EventType.EXECUTION_STARTED, run.row)] if run.top_level else []

    def _node_started(self, conn: Connection, run: Run, node_id: str, attempt: int, now: datetime) -> list[Delivery]:
        values = {"status": NodeStatus.RUNNING.value, "attempts": attempt, "retry_at": None, "error": None}
        if node_id in run.nodes:
            workflow_queries.update_node(conn, run.id, node_id, values)
            run.nodes[node_id].update(values)
        else:
            row = {"execution_id": run.id, "node_id": node_id, **values, "output": None, "branch": None,
                   "waiting_for": None, "wait_conversation_id": None, "wait_agent_id": None, "response": None,
                   "started_at": now, "finished_at": None, "duration_ms": None}
            workflow_queries.insert_node(conn, row)
            run.nodes[node_id] = row
        if run.row["status"] != ExecutionStatus.RUNNING:
            workflow_queries.update_execution(conn, run.id, {"status": ExecutionStatus.RUNNING.value})
            run.row["status"] = ExecutionStatus.RUNNING.value
        return [self._event(conn, EventType.NODE_STARTED, run.row, run.nodes[node_id])] if run.top_level else []

    def _node_done(self, conn: Connection, run: Run, node_id: str, status: NodeStatus, *, output: Any = None,
                   branch: str | None = None, error: dict[str, Any] | None = None, duration_ms: float | None = None,
                   cancel_children: bool = False) -> list[Delivery]:
        values = _not_waiting({"status": status.value, "output": output, "branch": branch, "error": error,
                               "finished_at": self._clock.now(), "duration_ms": duration_ms})
        workflow_queries.update_node(conn, run.id, node_id, values)
        run.nodes[node_id].update(values)
        if cancel_children:
            for child in workflow_queries.children_of(conn, run.id, node_id):
                self.end(conn, child["id"], ExecutionStatus.CANCELLED,
                         error={"code": "cancelled", "message": "another item of the map failed"})
        if not run.top_level:
            return []
        event = EventType.NODE_COMPLETED if status == NodeStatus.COMPLETED else EventType.NODE_FAILED
        return [self._event(conn, event, run.row, run.nodes[node_id])]

    def _retrying(self, conn: Connection, run: Run, node_id: str, error: StepError,
                  retry_at: datetime) -> list[Delivery]:
        values = {"status": NodeStatus.RETRYING.value, "error": error.as_json(), "retry_at": retry_at}
        workflow_queries.update_node(conn, run.id, node_id, values)
        run.nodes[node_id].update(values)
        return []

    def _waiting(self, conn: Connection, run: Run, node: Node, wait: Wait) -> list[Delivery]:
        values = {"status": NodeStatus.WAITING.value, "waiting_for": wait.waiting_for,
                  "wait_conversation_id": wait.conversation_id, "wait_agent_id": wait.agent_id}
        workflow_queries.update_node(conn, run.id, node.id, values)
        run.nodes[node.id].update(values)
        deliveries: list[Delivery] = []
        if wait.notify_agent and wait.agent_id is not None:
            deliveries.append(emit(conn, EventType.WORKFLOW_REQUEST, None, actor_id=run.row["owner_id"],
                                   now=self._clock.now(), to=[wait.agent_id], subject_id=run.id,
                                   execution=execution_event(run.row), node=node_run(run.nodes[node.id])))
        return deliveries

    def _skip(self, conn: Connection, run: Run, skipped: list[str]) -> list[Delivery]:
        now = self._clock.now()
        for node_id in skipped:
            row = {"execution_id": run.id, "node_id": node_id, "status": NodeStatus.SKIPPED.value, "attempts": 0,
                   "output": None, "error": None, "branch": None, "waiting_for": None, "wait_conversation_id": None,
                   "wait_agent_id": None, "response": None, "retry_at": None, "started_at": now, "finished_at": now,
                   "duration_ms": 0.0}
            workflow_queries.insert_node(conn, row)
            run.nodes[node_id] = row
        return []

    def _start_items(self, conn: Connection, run: Run, node_id: str, items: list[Any],
                     indexes: range) -> list[Delivery]:
        now = self._clock.now()
        given = run.row["input"] if run.top_level else run.row["input"]["input"]
        for index in indexes:
            child_id = ids.new_id(ids.EXECUTION)
            workflow_queries.insert_execution(conn, {
                "id": child_id, "workflow_id": run.row["workflow_id"], "version": run.row["version"],
                "owner_id": run.row["owner_id"], "status": ExecutionStatus.PENDING.value,
                "trigger": Trigger.WORKFLOW.value, "input": {"item": items[index], "index": index, "input": given},
                "output": None, "error": None, "idempotency_key": None, "parent_execution_id": run.id,
                "parent_node_id": node_id, "item_index": index, "wake_seq": 0, "created_at": now,
                "started_at": None, "finished_at": None, "deadline_at": run.row["deadline_at"]})
            enqueue(conn, child_id, now)
        return []


def enqueue(conn: Connection, execution_id: str, now: datetime) -> None:
    job_queries.ensure(conn, ADVANCE_JOB, execution_id, {}, now, now)


def _not_waiting(values: dict[str, Any]) -> dict[str, Any]:
    """A node that stops waiting leaves the indexes that find waiting nodes."""
    return {**values, "wait_conversation_id": None, "wait_agent_id": None}


def _ms_since(node: dict[str, Any], now: datetime) -> float | None:
    return (now - node["started_at"]).total_seconds() * 1000 if node["started_at"] else None

