"""Workflow operations: save (each save a version), read, restore, delete; run, answer, watch, cancel."""

from protocol.common import Empty
from protocol.identity import Scope
from protocol.workflows import (
    CreateWorkflowParams,
    DeletedWorkflow,
    Execution,
    ExecutionPage,
    ExecutionRef,
    GetExecutionParams,
    GetWorkflowParams,
    ListExecutionsParams,
    ListWorkflowsParams,
    Responded,
    RespondParams,
    RestoreParams,
    RunWorkflowParams,
    StartedExecution,
    StatsParams,
    StatsResult,
    UpdateWorkflowParams,
    VersionPage,
    VersionsParams,
    Workflow,
    WorkflowPage,
    WorkflowRef,
    WorkflowRequests,
)

from ..principal import Principal
from ..ratelimit import RateClass
from ..services import Services
from .table import operation


@operation("workflows.create", scope=Scope.WORKFLOWS_WRITE, rate=RateClass.WRITE, route=("POST", "/api/workflows", 201))
async def create(services: Services, caller: Principal, params: CreateWorkflowParams) -> Workflow:
    """Save a new workflow: a graph of steps (`nodes`, `edges`), the input's JSON Schema, the scopes its `call`
    steps may use. It is version 1.

    The whole graph is checked first, and what is wrong comes back as `invalid_request` with `details.path`
    (e.g. `nodes[2].text`): unknown step types, bad parameters, templates that do not parse, edges to missing
    nodes, cycles (repeat steps with a `map`), nodes the first node cannot reach, grants beyond your own.
    """
    return await services.workflows.create(caller, params)


@operation("workflows.update", scope=Scope.WORKFLOWS_WRITE, rate=RateClass.WRITE,
           route=("PUT", "/api/workflows/{workflow_id}"), idempotent=True)
async def update(services: Services, caller: Principal, params: UpdateWorkflowParams) -> Workflow:
    """Save a workflow again: checked as on create, it becomes the next version. Runs already started keep theirs."""
    return await services.workflows.update(caller, params)


@operation("workflows.get", scope=Scope.WORKFLOWS_READ, rate=RateClass.READ,
           route=("GET", "/api/workflows/{workflow_id}"), read_only=True)
async def get(services: Services, caller: Principal, params: GetWorkflowParams) -> Workflow:
    """One of your workflows: its current version's definition, or an older `version`'s."""
    assert caller.agent_id is not None
    return await services.workflows.get(caller.agent_id, params.workflow_id, params.version)


@operation("workflows.list", scope=Scope.WORKFLOWS_READ, rate=RateClass.READ, route=("GET", "/api/workflows"),
           read_only=True)
async def list_workflows(services: Services, caller: Principal, params: ListWorkflowsParams) -> WorkflowPage:
    """Your workflows, newest first, a page at a time."""
    assert caller.agent_id is not None
    return await services.workflows.list_workflows(caller.agent_id, params)


@operation("workflows.versions", scope=Scope.WORKFLOWS_READ, rate=RateClass.READ,
           route=("GET", "/api/workflows/{workflow_id}/versions"), read_only=True)
async def versions(services: Services, caller: Principal, params: VersionsParams) -> VersionPage:
    """A workflow's versions, newest first (which were restores of which)."""
    assert caller.agent_id is not None
    return await services.workflows.versions(caller.agent_id, params)


@operation("workflows.restore", scope=Scope.WORKFLOWS_WRITE, rate=RateClass.WRITE,
           route=("POST", "/api/workflows/{workflow_id}/restore"))
async def restore(services: Services, caller: Principal, params: RestoreParams) -> Workflow:
    """Make an old version current again: a new version equal to it (history is never rewritten)."""
    assert caller.agent_id is not None
    return await services.workflows.restore(caller.agent_id, params)


@operation("workflows.delete", scope=Scope.WORKFLOWS_WRITE, rate=RateClass.WRITE,
           route=("DELETE", "/api/workflows/{workflow_id}"), destructive=True, idempotent=True)
async def delete(services: Services, caller: Principal, params: WorkflowRef) -> DeletedWorkflow:
    """Delete a workflow: no longer listed or runnable; its unfinished runs are cancelled, its runs stay readable."""
    assert caller.agent_id is not None
    return await services.workflows.delete(caller.agent_id, params.workflow_id)


@operation("workflows.run", scope=Scope.WORKFLOWS_RUN, rate=RateClass.WRITE,
           route=("POST", "/api/workflows/{workflow_id}/runs", 202), idempotent=True,
           idempotency_param="idempotency_key")
async def run(services: Services, caller: Principal, params: RunWorkflowParams) -> StartedExecution:
    """Start a run of a workflow's current version with `input` (checked against its input_schema); the
    execution id comes back at once.

    Watch it with `executions.get`, or live: its `execution.*` and `node.*` events arrive on your event
    stream (and `POST /api/workflows/{id}/runs?stream=true` answers with that run's events as SSE). The
    same `idempotency_key` (REST: the `Idempotency-Key` header) returns the first run instead of a second.
    """
    assert caller.agent_id is not None
    return await services.workflows.run(caller.agent_id, params)


@operation("workflows.respond", scope=Scope.WORKFLOWS_RUN, rate=RateClass.WRITE,
           route=("POST", "/api/executions/{execution_id}/respond"))
async def respond(services: Services, caller: Principal, params: RespondParams) -> Responded:
    """Answer a step that waits for you: an `approval` (`approve`: true or false, and a note in `text`) or an
    `ask` (`text`, sent as your reply in its conversation)."""
    return await services.workflows.respond(caller, params)


@operation("workflows.requests", scope=Scope.WORKFLOWS_RUN, rate=RateClass.READ,
           route=("GET", "/api/workflows/requests"), read_only=True)
async def requests(services: Services, caller: Principal, params: Empty) -> WorkflowRequests:
    """The steps of anyone's workflows that wait for your answer (approvals, asks), oldest first."""
    assert caller.agent_id is not None
    return await services.workflows.requests(caller.agent_id)


@operation("executions.get", scope=Scope.WORKFLOWS_READ, rate=RateClass.READ,
           route=("GET", "/api/executions/{execution_id}"), read_only=True)
async def get_execution(services: Services, caller: Principal, params: GetExecutionParams) -> Execution:
    """One of your runs: status, input, output or error, and each node's result, attempts and duration.

    With `wait_seconds`, the answer comes when the run ends, or once that time has passed (long polling).
    """
    assert caller.agent_id is not None
    if params.wait_seconds:
        return await services.workflows.wait_for_end(caller.agent_id, params.execution_id, params.wait_seconds)
    return await services.workflows.get_execution(caller.agent_id, params.execution_id)


@operation("executions.list", scope=Scope.WORKFLOWS_READ, rate=RateClass.READ, route=("GET", "/api/executions"),
           read_only=True)
async def list_executions(services: Services, caller: Principal, params: ListExecutionsParams) -> ExecutionPage:
    """Your runs, newest first; filter by workflow, status, trigger and time (`since`, `until`)."""
    assert caller.agent_id is not None
    return await services.workflows.list_executions(caller.agent_id, params)


@operation("executions.cancel", scope=Scope.WORKFLOWS_RUN, rate=RateClass.WRITE,
           route=("POST", "/api/executions/{execution_id}/cancel"), idempotent=True)
async def cancel(services: Services, caller: Principal, params: ExecutionRef) -> Execution:
    """Cancel a run: it ends `cancelled` at once (a step in flight finishes but nothing after it runs)."""
    assert caller.agent_id is not None
    return await services.workflows.cancel(caller.agent_id, params.execution_id)


@operation("executions.stats", scope=Scope.WORKFLOWS_READ, rate=RateClass.READ,
           route=("GET", "/api/executions/stats"), read_only=True)
async def stats(services: Services, caller: Principal, params: StatsParams) -> StatsResult:
    """Per workflow over a window (default the last 24 hours): runs by status, success rate, duration p50/p95."""
    assert caller.agent_id is not None
    return await services.workflows.stats(caller.agent_id, params)
