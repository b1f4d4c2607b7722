"""Tools for workflows: find them, run one (and wait a while for its result), see how a run goes, and
answer a step that waits for you.

Saving a workflow stays on REST and JSON-RPC (a graph is an integrator's job, not a chat turn). A
run's status is compact: each node's id and status, the output or error, and what it waits for.
"""

from typing import Annotated, Any

from pydantic import BaseModel, Field

from ..access import HubCaller
from .base import Toolset

toolset = Toolset()

RunRef = Annotated[str, Field(description="exe_ id")]


class WorkflowItem(BaseModel):
    id: str
    name: str
    description: str | None = None


class Workflows(BaseModel):
    workflows: list[WorkflowItem]


class Step(BaseModel):
    id: str
    status: str
    waiting_for: dict[str, Any] | None = None


class RunStatus(BaseModel):
    execution_id: str
    status: str
    output: Any = None
    error: dict[str, Any] | None = None
    steps: list[Step] | None = None


class Answered(BaseModel):
    execution_id: str
    answered: str


class Request(BaseModel):
    execution_id: str
    node_id: str
    kind: str
    prompt: str | None = None
    conversation: str | None = None


class Status(BaseModel):
    run: RunStatus | None = None
    requests: list[Request] | None = Field(default=None, description="Steps waiting for your answer")


def _status(execution: dict[str, Any], steps: bool = True) -> RunStatus:
    return RunStatus(execution_id=execution["execution_id"], status=execution["status"], output=execution["output"],
                     error=execution["error"],
                     steps=[Step(id=node["node_id"], status=node["status"],
                                 waiting_for=node["waiting_for"] if node["status"] == "waiting" else None)
                            for node in execution["nodes"]] if steps else None)


@toolset.tool("List workflows", operations=("workflows.list",))
async def list_workflows(hub: HubCaller, limit: Annotated[int, Field(ge=1, le=50)] = 20) -> Workflows:
    """Your workflows, newest first."""
    page = await hub.call("workflows.list", {"limit": limit})
    return Workflows(workflows=[WorkflowItem(id=item["workflow_id"], name=item["name"],
                                             description=item["description"] or None) for item in page["items"]])


@toolset.tool("Run a workflow", operations=("workflows.run", "executions.get"))
async def run_workflow(
    hub: HubCaller,
    workflow_id: Annotated[str, Field(description="wfl_ id")],
    input: dict[str, Any] | None = None,
    wait_seconds: Annotated[float, Field(ge=0, le=60, description="Wait this long for the result")] = 10,
) -> RunStatus:
    """Start a run; answers with its result if it ends within `wait_seconds`, else its status (check again
    with workflow_status)."""
    started = await hub.call("workflows.run", {"workflow_id": workflow_id, "input": input or {}})
    execution = await hub.call("executions.get", {"execution_id": started["execution_id"],
                                                  "wait_seconds": wait_seconds})
    return _status(execution, steps=execution["status"] not in ("completed",))


@toolset.tool("Workflow status", operations=("executions.get", "workflows.requests"))
async def workflow_status(hub: HubCaller, execution_id: RunRef | None = None) -> Status:
    """A run's status and steps; without execution_id, the workflow steps waiting for your answer."""
    if execution_id is None:
        found = await hub.call("workflows.requests", {})
        return Status(requests=[Request(execution_id=r["execution_id"], node_id=r["node_id"], kind=r["kind"],
                                        prompt=r["prompt"], conversation=r["conversation_id"])
                                for r in found["items"]])
    return Status(run=_status(await hub.call("executions.get", {"execution_id": execution_id})))


@toolset.tool("Respond to a workflow", operations=("workflows.respond",))
async def respond_to_workflow(
    hub: HubCaller,
    execution_id: RunRef,
    node_id: str,
    approve: Annotated[bool | None, Field(description="For an approval")] = None,
    text: Annotated[str | None, Field(description="For an ask: your answer; else a note")] = None,
) -> Answered:
    """Answer a workflow step that waits for you (see workflow_status): approve or reject, or answer an ask."""
    params = {k: v for k, v in {"execution_id": execution_id, "node_id": node_id, "approve": approve,
                                "text": text}.items() if v is not None}
    answered = await hub.call("workflows.respond", params)
    return Answered(execution_id=answered["execution_id"], answered=answered["answered"])
