"""Models of workflows: a saved graph of steps, its versions, and its runs (executions).

A workflow belongs to an agent. Its definition is a graph of nodes (steps) and edges; every save is
a new version, and a run records the version it ran. A node's parameters may hold templates
(`"Hello {{ input.name }}"`) and expressions (`condition.if`, `map.items`) over the run's data; see
`docs/workflows.md` for the language. The hub hosts no LLM: a workflow asks an agent (`ask`) and
waits for its reply in the conversation everyone uses.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import Field

from .common import Cursor, IsoMoment, Model, PageLimit, Version
from .identity import Scope

WorkflowId = Annotated[str, Field(pattern=r"^wfl_[0-9a-z]{26}$", description="A workflow's id (`wfl_…`).")]
ExecutionId = Annotated[str, Field(pattern=r"^exe_[0-9a-z]{26}$", description="A run's id (`exe_…`).")]
NodeId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="Lower case, digits, `_`; unique.")]
Template = Annotated[str, Field(max_length=16_384, description="Text with `{{ expression }}` parts.")]
Expression = Annotated[str, Field(min_length=1, max_length=2048, description="An expression over the run's data.")]
AgentRef = Annotated[str, Field(min_length=1, max_length=64, description="An agent's handle or id.")]

MAX_NODES: Final = 100
"""In one graph, a map's sub-graph included."""
MAX_MAP_DEPTH: Final = 3
MAX_DEFINITION_BYTES: Final = 256 * 1024
MAX_WAIT_SECONDS: Final = 30 * 24 * 3600
MAX_RUN_SECONDS: Final = 30 * 24 * 3600
DEFAULT_RUN_SECONDS: Final = 24 * 3600
MAX_MAP_ITEMS: Final = 1000
MAX_MAP_CONCURRENCY: Final = 10
MAX_INPUT_BYTES: Final = 64 * 1024


class Retry(Model):
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 1
    backoff_seconds: Annotated[float, Field(ge=0.1, le=3600)] = 2.0
    """The first retry's delay; each later one doubles it."""


class NodeBase(Model):
    id: NodeId
    retry: Retry = Retry()
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0, description="One attempt's limit (a step that waits has its own `timeout_seconds`).")
    continue_on_error: bool = Field(
        default=False, description="A failure (after the retries) becomes this node's output, `{\"error\": …}`, and "
                                   "the run goes on.")


class SendNode(NodeBase):
    """A message to an agent (`to`: your direct conversation) or into a conversation."""

    type: Literal["send"]
    to: AgentRef | None = None
    conversation_id: Template | None = None
    text: Template


class AskNode(NodeBase):
    """Send, then wait for the reply in that conversation: how a workflow uses an LLM agent."""

    type: Literal["ask"]
    to: AgentRef | None = None
    conversation_id: Template | None = None
    text: Template
    reply_from: AgentRef | None = Field(default=None, description="Whose reply counts; default `to`, else anyone "
                                                                   "but the workflow's owner.")
    wait_seconds: Annotated[float, Field(gt=0, le=MAX_WAIT_SECONDS)] = 3600.0


class CallNode(NodeBase):
    """Any operation of the hub, as the workflow's owner, within the scopes the workflow was granted."""

    type: Literal["call"]
    operation: Annotated[str, Field(min_length=1, max_length=64)]
    params: dict[str, Any] = Field(default_factory=dict, description="Templates allowed in any string value.")


class HttpNode(NodeBase):
    """An outbound HTTP request (public addresses only, unless the operator allows more)."""

    type: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: Template
    headers: dict[str, Template] = Field(default_factory=dict)
    json_body: Any = Field(default=None, description="Sent as JSON; templates allowed in string values.")
    text_body: Template | None = None
    fail_on_status: bool = Field(default=True, description="A 4xx or 5xx answer fails the step (and is retried).")


BranchLabel = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,40}$")]


class Case(Model):
    when: Expression
    label: BranchLabel


class ConditionNode(NodeBase):
    """Choose a branch: with `if`, edges from it carry `when: "true"` or `"false"`; with `cases`, the label of
    the first case whose `when` is true, else `default`."""

    type: Literal["condition"]
    if_: Expression | None = Field(default=None, alias="if")
    cases: Annotated[list[Case], Field(min_length=1, max_length=20)] | None = None
    default: BranchLabel = "default"


class TransformNode(NodeBase):
    """Build JSON from the run's data: a string that is one `{{ … }}` keeps its value's type."""

    type: Literal["transform"]
    value: Any


class DelayNode(NodeBase):
    type: Literal["delay"]
    seconds: Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS)] | None = None
    until: Template | None = Field(default=None, description="An ISO 8601 time (with its offset).")


class ApprovalNode(NodeBase):
    """Wait until an agent approves or rejects through `workflows.respond`."""

    type: Literal["approval"]
    approver: AgentRef
    prompt: Template
    wait_seconds: Annotated[float, Field(gt=0, le=MAX_WAIT_SECONDS)] = 24 * 3600.0


class RememberNode(NodeBase):
    type: Literal["remember"]
    content: Template
    category: str | None = None
    tags: list[str] = Field(default_factory=list)
    conversation_id: Template | None = None


class RecallNode(NodeBase):
    type: Literal["recall"]
    query: Template
    limit: Annotated[int, Field(ge=1, le=50)] = 5
    conversation_id: Template | None = None


class SearchDocumentsNode(NodeBase):
    type: Literal["search_documents"]
    query: Template
    limit: Annotated[int, Field(ge=1, le=50)] = 5
    conversation_id: Template | None = None


class MapNode(NodeBase):
    """Run a sub-graph once per item, at most `concurrency` at a time; its output is their outputs, in order."""

    type: Literal["map"]
    items: Expression
    concurrency: Annotated[int, Field(ge=1, le=MAX_MAP_CONCURRENCY)] = 4
    nodes: Annotated[list["Node"], Field(min_length=1)]
    edges: list["Edge"] = Field(default_factory=list)
    output: Any = Field(default=None, description="Each item's result (templates over `item` and `steps`); "
                                                  "default: the output of the sub-graph's last node.")


Node = Annotated[
    SendNode | AskNode | CallNode | HttpNode | ConditionNode | TransformNode | DelayNode | ApprovalNode
    | RememberNode | RecallNode | SearchDocumentsNode | MapNode,
    Field(discriminator="type"),
]
STEP_TYPES: Final = ("send", "ask", "call", "http", "condition", "transform", "delay", "approval", "remember",
                     "recall", "search_documents", "map")


class Edge(Model):
    from_: NodeId = Field(alias="from")
    to: NodeId
    when: BranchLabel | None = Field(
        default=None, description="From a condition: the branch (`true`, `false`, or a case's label) it takes.")


MapNode.model_rebuild()


class Definition(Model):
    """What a save sends: the graph, the input's schema, the scopes `call` steps may use, limits."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    description: Annotated[str, Field(max_length=4096)] = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"},
                                         description="JSON Schema (2020-12) the input must satisfy.")
    nodes: Annotated[list[Node], Field(min_length=1)]
    edges: list[Edge] = Field(default_factory=list)
    output: Any = Field(default=None, description="The run's output (templates allowed); default: the output of "
                                                  "its last node, or of each last node by id.")
    scopes: list[Scope] = Field(default_factory=list, description="What `call` steps may do, within yours.")
    timeout_seconds: Annotated[float, Field(gt=0, le=MAX_RUN_SECONDS)] = DEFAULT_RUN_SECONDS


class CreateWorkflowParams(Definition):
    pass


class UpdateWorkflowParams(Definition):
    workflow_id: WorkflowId


class Workflow(Model):
    workflow_id: str
    owner_id: str
    version: int
    definition: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class WorkflowSummary(Model):
    workflow_id: str
    name: str
    description: str
    version: int
    updated_at: datetime


class GetWorkflowParams(Model):
    workflow_id: WorkflowId
    version: Version | None = Field(default=None, description="An older version; default the current one.")


class WorkflowRef(Model):
    workflow_id: WorkflowId


class ListWorkflowsParams(Model):
    limit: PageLimit = 50
    cursor: Cursor | None = None


class WorkflowPage(Model):
    items: list[WorkflowSummary]
    next_cursor: str | None


class VersionsParams(Model):
    workflow_id: WorkflowId
    limit: PageLimit = 50
    cursor: Cursor | None = None


class VersionInfo(Model):
    version: int
    created_at: datetime
    restored_from: int | None


class VersionPage(Model):
    items: list[VersionInfo]
    next_cursor: str | None


class RestoreParams(Model):
    workflow_id: WorkflowId
    version: Version


class DeletedWorkflow(Model):
    workflow_id: str
    deleted: Literal[True] = True


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


FINISHED: Final = frozenset({ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED,
                             ExecutionStatus.TIMED_OUT})


class Trigger(StrEnum):
    MANUAL = "manual"
    SCHEDULE = "schedule"
    API_KEY = "api_key"
    WORKFLOW = "workflow"


class NodeStatus(StrEnum):
    RUNNING = "running"
    WAITING = "waiting"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


class NodeRun(Model):
    node_id: str
    status: NodeStatus
    attempts: int
    output: Any = None
    error: dict[str, Any] | None = None
    waiting_for: dict[str, Any] | None = Field(default=None, description="What a waiting step waits for, and until "
                                                                          "when.")
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None


class Execution(Model):
    execution_id: str
    workflow_id: str
    version: int
    owner_id: str
    status: ExecutionStatus
    trigger: Trigger
    input: Any
    output: Any = None
    error: dict[str, Any] | None = None
    parent_execution_id: str | None = None
    nodes: list[NodeRun] = Field(default_factory=list)
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    deadline_at: datetime


class RunWorkflowParams(Model):
    workflow_id: WorkflowId
    input: Any = Field(default_factory=dict)
    idempotency_key: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="The same key (for this workflow) returns the first run instead of a second one.")


class StartedExecution(Model):
    """A run, started (or, for a repeated idempotency key, the one the key started first)."""

    execution_id: str
    workflow_id: str
    version: int


class RespondParams(Model):
    execution_id: ExecutionId
    node_id: NodeId
    approve: bool | None = Field(default=None, description="For an `approval`: the decision.")
    text: Annotated[str, Field(max_length=16_384)] | None = Field(default=None, description="For an `ask`: the reply "
                                                                                          "(or a note to an approval).")


class Responded(Model):
    execution_id: str
    node_id: str
    answered: Literal["approved", "rejected", "replied"]


class WorkflowRequest(Model):
    """A waiting step addressed to you: an `approval` to decide, or an `ask` to answer."""

    execution_id: str
    workflow_id: str
    node_id: str
    owner_id: str = Field(description="Whose workflow asks.")
    kind: Literal["approval", "ask"]
    prompt: str | None = Field(description="An approval's prompt (an ask's question is its message).")
    conversation_id: str | None = Field(description="Where an ask's question was sent.")
    until: datetime


class WorkflowRequests(Model):
    items: list[WorkflowRequest]


class ExecutionRef(Model):
    execution_id: ExecutionId


class GetExecutionParams(Model):
    execution_id: ExecutionId
    wait_seconds: Annotated[float, Field(ge=0, le=60)] = Field(
        default=0, description="Wait up to this long for the run to end (long polling); 0: answer at once.")


class ListExecutionsParams(Model):
    workflow_id: WorkflowId | None = None
    status: ExecutionStatus | None = None
    trigger: Trigger | None = None
    since: IsoMoment | None = None
    until: IsoMoment | None = None
    limit: PageLimit = 50
    cursor: Cursor | None = None


class ExecutionSummary(Model):
    execution_id: str
    workflow_id: str
    version: int
    status: ExecutionStatus
    trigger: Trigger
    error: dict[str, Any] | None = None
    created_at: datetime
    finished_at: datetime | None


class ExecutionPage(Model):
    items: list[ExecutionSummary]
    next_cursor: str | None


class StatsParams(Model):
    workflow_id: WorkflowId | None = None
    since: IsoMoment | None = Field(default=None, description="Default: 24 hours ago.")
    until: IsoMoment | None = None


class WorkflowStats(Model):
    workflow_id: str
    counts: dict[str, int] = Field(description="Runs by status.")
    success_rate: float | None = Field(description="Completed out of finished; null when none finished.")
    duration_p50_ms: float | None
    duration_p95_ms: float | None


class StatsResult(Model):
    since: datetime
    until: datetime
    workflows: list[WorkflowStats]


class ExecutionEvent(Model):
    """What a run event carries: the run as it stands (without per-node results)."""

    execution_id: str
    workflow_id: str
    version: int
    status: ExecutionStatus
    trigger: Trigger
    output: Any = None
    error: dict[str, Any] | None = None
