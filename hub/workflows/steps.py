"""What each step type does when it runs: finish with an output, or wait for something.

A step acts through the hub's own operations (`Hub.dispatch`, as the workflow's owner), so a workflow
can do nothing its owner could not, and every limit, check and event applies to it as to anyone. A
step with a side effect passes a key derived from the run, the node and the attempt (a message's
`client_msg_id`, an HTTP `Idempotency-Key`): a run resumed after a crash repeats the attempt it was in,
and the key makes that repetition a no-op.
"""

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from protocol.errors import HubError
from protocol.workflows import (
    MAX_MAP_ITEMS,
    ApprovalNode,
    AskNode,
    CallNode,
    ConditionNode,
    DelayNode,
    HttpNode,
    MapNode,
    Node,
    RecallNode,
    RememberNode,
    SearchDocumentsNode,
    SendNode,
    TransformNode,
)

from ..outbound import OutboundClient, OutboundFailed, OutboundRefused
from .expressions import ExpressionError, evaluate, render, render_value

# The operations each built-in step runs. Saving a workflow with such a step needs their scopes, so a key
# cannot reach past its own scopes through a workflow (`call` steps have their own grant: `scopes`).
STEP_OPERATIONS: Final[dict[str, tuple[str, ...]]] = {
    "send": ("messages.send", "agents.get"), "ask": ("messages.send", "agents.get"),
    "remember": ("memories.create",), "recall": ("memories.search",), "search_documents": ("documents.search",),
}

Dispatch = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""Run a hub operation as the workflow's owner: `(operation, params) -> result`."""
Fetch = Callable[[str, str, dict[str, str], bytes | None, float], Awaitable[dict[str, Any]]]
"""An outbound HTTP request through the SSRF guard: `(method, url, headers, body, timeout) -> response`."""


def fetch_with(client: OutboundClient) -> Fetch:
    """`Fetch` through the hub's outbound client: a response as the step's output (`status`, `headers`,
    `body`: JSON when it is, else text), refusals and failures as step errors. A step's own timeout may
    be shorter than the operator's `outbound_timeout_seconds`, never longer."""

    async def fetch(method: str, url: str, headers: dict[str, str], body: bytes | None,
                    timeout: float) -> dict[str, Any]:
        try:
            response = await client.request(method, url, headers=headers, content=body,
                                            timeout=min(timeout, client.timeout))
        except OutboundRefused as refused:
            raise StepError("refused", str(refused), retryable=False) from None
        except OutboundFailed as failed:
            raise StepError("http_failed", str(failed)) from None
        text = response.body.decode("utf-8", errors="replace")
        try:
            decoded: Any = json.loads(text) if "json" in response.headers.get("content-type", "") else text
        except ValueError:
            decoded = text
        return {"status": response.status, "headers": response.headers, "body": decoded}

    return fetch


class StepError(Exception):
    """A step failed: `code` (the hub's error code, or the step's own), a message, and whether another
    attempt could succeed."""

    def __init__(self, code: str, message: str, *, retryable: bool = True, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.details = details or {}

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **({"details": self.details} if self.details else {})}


@dataclass(frozen=True)
class Done:
    output: Any
    branch: str | None = None


@dataclass(frozen=True)
class Wait:
    """The step waits: for a reply in a conversation, an agent's response, a time, or its items' runs."""

    waiting_for: dict[str, Any]
    until: datetime
    conversation_id: str | None = None
    agent_id: str | None = None
    notify_agent: bool = False
    """Tell `agent_id` it is asked (an approval's `workflow.request` event)."""


@dataclass
class StepContext:
    execution_id: str
    owner_id: str
    node_id: str
    attempt: int
    data: dict[str, Any]
    now: datetime
    dispatch: Dispatch
    """As the owner, for the built-in steps (send, ask, remember, …)."""
    granted: Dispatch
    """As the owner within the workflow's grants, for `call` steps."""
    fetch: Fetch

    def key(self) -> str:
        """The idempotency key of this attempt of this node in this run."""
        digest = hashlib.sha256(f"{self.execution_id}/{self.node_id}/{self.attempt}".encode()).hexdigest()
        return f"wf-{digest[:40]}"

    def render(self, template: str) -> Any:
        return _expression_step(lambda: render(template, self.data))

    def text(self, template: str) -> str:
        value = self.render(template)
        return value if isinstance(value, str) else json.dumps(value)

    async def call(self, operation: str, params: dict[str, Any], *, granted: bool = False) -> dict[str, Any]:
        try:
            return await (self.granted if granted else self.dispatch)(operation, params)
        except HubError as error:
            raise StepError(error.code.value, error.message, details=error.details or {},
                            retryable=error.code.value in ("rate_limited", "internal")) from None


def _expression_step(compute: Callable[[], Any]) -> Any:
    try:
        return compute()
    except ExpressionError as error:
        raise StepError("expression", str(error), retryable=False) from None


async def run_step(node: Node, context: StepContext) -> Done | Wait:
    """Run one attempt of `node`."""
    match node:
        case SendNode():
            message = await context.call("messages.send", _message_params(node, context))
            return Done({"message_id": message["message_id"], "conversation_id": message["conversation_id"],
                         "seq": message["seq"]})
        case AskNode():
            return await _ask(node, context)
        case CallNode():
            return Done(await context.call(node.operation, _call_params(node, context), granted=True))
        case ConditionNode():
            return Done(*_condition(node, context))
        case TransformNode():
            return Done(_expression_step(lambda: render_value(node.value, context.data)))
        case DelayNode():
            until = context.now + timedelta(seconds=node.seconds) if node.seconds is not None else _time(
                context.text(node.until or ""))
            return Wait({"kind": "delay", "until": until.isoformat()}, until)
        case ApprovalNode():
            approver = await _agent_id(context, context.text(node.approver))
            until = context.now + timedelta(seconds=node.wait_seconds)
            return Wait({"kind": "approval", "approver_id": approver, "prompt": context.text(node.prompt),
                         "until": until.isoformat()}, until, agent_id=approver, notify_agent=True)
        case RememberNode():
            params = {"content": context.text(node.content), "tags": node.tags, "category": node.category}
            if node.conversation_id is not None:
                params["conversation_id"] = context.text(node.conversation_id)
            created = await context.call("memories.create", {k: v for k, v in params.items() if v is not None})
            return Done({"memory_id": created["memory"]["memory_id"], "duplicate": created["duplicate"]})
        case RecallNode():
            found = await context.call("memories.search", _search_params(node, context))
            return Done({"memories": [{"memory_id": hit["memory"]["memory_id"], "content": hit["memory"]["content"],
                                       "score": hit["score"]} for hit in found["items"]]})
        case SearchDocumentsNode():
            found = await context.call("documents.search", _search_params(node, context))
            return Done({"passages": [{**passage["citation"], "text": passage["text"], "score": passage["score"]}
                                      for hit in found["items"] for passage in hit["passages"]]})
        case HttpNode():
            return Done(await _http(node, context))
        case MapNode():
            items = _expression_step(lambda: evaluate(node.items, context.data))
            if not isinstance(items, list):
                raise StepError("expression", f"map items must be a list, not {type(items).__name__}", retryable=False)
            if len(items) > MAX_MAP_ITEMS:
                raise StepError("too_many_items", f"a map runs at most {MAX_MAP_ITEMS} items; got {len(items)}",
                                retryable=False)
            return Wait({"kind": "map", "items": items, "concurrency": node.concurrency},
                        context.now + timedelta(days=3650))
    raise AssertionError(f"no runner for step type {node.type}")


def _message_params(node: SendNode | AskNode, context: StepContext) -> dict[str, Any]:
    params: dict[str, Any] = {"body": context.text(node.text), "client_msg_id": context.key()}
    if node.to is not None:
        params["to"] = context.text(node.to)
    else:
        params["conversation_id"] = context.text(node.conversation_id or "")
    return params


async def _ask(node: AskNode, context: StepContext) -> Wait:
    message = await context.call("messages.send", _message_params(node, context))
    ref = node.reply_from or node.to
    replier = await _agent_id(context, context.text(ref)) if ref is not None else None
    until = context.now + timedelta(seconds=node.wait_seconds)
    return Wait({"kind": "reply", "conversation_id": message["conversation_id"], "after_seq": message["seq"],
                 "message_id": message["message_id"], "from_id": replier, "until": until.isoformat()},
                until, conversation_id=message["conversation_id"], agent_id=replier)


async def _agent_id(context: StepContext, ref: str) -> str:
    return str((await context.call("agents.get", {"agent": ref}))["agent_id"])


def _call_params(node: CallNode, context: StepContext) -> dict[str, Any]:
    params = _expression_step(lambda: render_value(node.params, context.data))
    if not isinstance(params, dict):
        raise StepError("expression", "call params must be an object", retryable=False)
    return params


def _search_params(node: RecallNode | SearchDocumentsNode, context: StepContext) -> dict[str, Any]:
    params: dict[str, Any] = {"query": context.text(node.query), "limit": node.limit}
    if node.conversation_id is not None:
        params["conversation_id"] = context.text(node.conversation_id)
    return params


def _condition(node: ConditionNode, context: StepContext) -> tuple[Any, str]:
    if node.if_ is not None:
        chosen = bool(_expression_step(lambda: evaluate(node.if_ or "", context.data)))
        return {"branch": str(chosen).lower()}, str(chosen).lower()
    for case in node.cases or []:
        if _expression_step(lambda case=case: evaluate(case.when, context.data)):
            return {"branch": case.label}, case.label
    return {"branch": node.default}, node.default


def _time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise StepError("expression", f"`until` is not an ISO 8601 time: {text!r}", retryable=False) from None
    if moment.tzinfo is None:
        raise StepError("expression", f"`until` needs its offset (e.g. Z or +02:00): {text!r}", retryable=False)
    return moment


async def _http(node: HttpNode, context: StepContext) -> dict[str, Any]:
    headers = {name: context.text(value) for name, value in node.headers.items()}
    headers.setdefault("Idempotency-Key", context.key())
    body: bytes | None = None
    if node.json_body is not None:
        body = json.dumps(_expression_step(lambda: render_value(node.json_body, context.data))).encode()
        headers.setdefault("Content-Type", "application/json")
    elif node.text_body is not None:
        body = context.text(node.text_body).encode()
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
    response = await context.fetch(node.method, context.text(node.url), headers, body, node.timeout_seconds)
    if node.fail_on_status and response["status"] >= 400:
        raise StepError("http_status", f"the server answered {response['status']}",
                        retryable=response["status"] >= 500 or response["status"] == 429,
                        details={"status": response["status"]})
    return response
