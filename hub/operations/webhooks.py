"""Trigger operations (a workflow started by an API key) and webhook endpoints: register, read, change,
rotate their secret, read their delivery log, redeliver."""

from protocol.identity import Scope
from protocol.webhooks import (
    CreatedWebhook,
    CreateWebhookParams,
    DeletedWebhook,
    DeliveriesParams,
    DeliveryPage,
    ListWebhooksParams,
    RedeliverParams,
    Redelivery,
    RotatedSecret,
    RotateSecretParams,
    TriggeredExecution,
    TriggerParams,
    TriggerStatusParams,
    UpdateWebhookParams,
    Webhook,
    WebhookPage,
    WebhookRef,
)
from protocol.workflows import Execution

from ..principal import Principal
from ..ratelimit import RateClass
from ..services import Services
from .table import operation


@operation("workflows.trigger", scope=Scope.WORKFLOWS_TRIGGER, rate=RateClass.WRITE,
           route=("POST", "/api/trigger/{workflow_id}", 202), idempotent=True, idempotency_param="idempotency_key")
async def trigger(services: Services, caller: Principal, params: TriggerParams) -> TriggeredExecution:
    """Start a run of one of your workflows from outside, with an API key that may carry only the
    `workflows:trigger` scope (`Authorization: Bearer <key>` or `X-API-Key: <key>`); the execution id comes back
    at once.

    Ask how it stands with `workflows.trigger_status` (`GET /api/trigger/status/{execution_id}`), or give a
    `webhook_url`: the run's end (its
    `execution.completed`, `.failed`, `.cancelled` or `.timed_out` event) is POSTed there, signed as Standard
    Webhooks asks, by your endpoint with that URL (one is registered if you have none: its secret comes back
    here, once). The same `idempotency_key` (REST: the `Idempotency-Key` header) returns the first run.
    """
    assert caller.agent_id is not None
    return await services.webhooks.trigger(caller.agent_id, params)


@operation("workflows.trigger_status", scope=Scope.WORKFLOWS_TRIGGER, rate=RateClass.READ,
           route=("GET", "/api/trigger/status/{execution_id}"), read_only=True)
async def trigger_status(services: Services, caller: Principal, params: TriggerStatusParams) -> Execution:
    """How one of your runs stands: status, output or error, each node's result (as `executions.get`)."""
    assert caller.agent_id is not None
    return await services.webhooks.trigger_status(caller.agent_id, params.execution_id)


@operation("webhooks.create", scope=Scope.WEBHOOKS_MANAGE, rate=RateClass.WRITE,
           route=("POST", "/api/webhooks", 201))
async def create(services: Services, caller: Principal, params: CreateWebhookParams) -> CreatedWebhook:
    """Register an endpoint: the events of `event_types` that reach you are POSTed to `url`, signed (Standard
    Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`). Its secret comes back once.

    The URL must be one the hub may reach (public addresses only, unless the operator allows more), checked now
    and at each delivery. A failed delivery is retried with exponential backoff over the retry window; an
    endpoint failing for a whole window is disabled, with the reason.
    """
    assert caller.agent_id is not None
    return await services.webhooks.create(caller.agent_id, params)


@operation("webhooks.list", scope=Scope.WEBHOOKS_MANAGE, rate=RateClass.READ, route=("GET", "/api/webhooks"),
           read_only=True)
async def list_webhooks(services: Services, caller: Principal, params: ListWebhooksParams) -> WebhookPage:
    """Your webhook endpoints, newest first, a page at a time."""
    assert caller.agent_id is not None
    return await services.webhooks.list_webhooks(caller.agent_id, params)


@operation("webhooks.get", scope=Scope.WEBHOOKS_MANAGE, rate=RateClass.READ,
           route=("GET", "/api/webhooks/{webhook_id}"), read_only=True)
async def get(services: Services, caller: Principal, params: WebhookRef) -> Webhook:
    """One of your endpoints: its URL, event types, whether it is enabled (and if not, why)."""
    assert caller.agent_id is not None
    return await services.webhooks.get(caller.agent_id, params.webhook_id)


@operation("webhooks.update", scope=Scope.WEBHOOKS_MANAGE, rate=RateClass.WRITE,
           route=("PATCH", "/api/webhooks/{webhook_id}"), idempotent=True)
async def update(services: Services, caller: Principal, params: UpdateWebhookParams) -> Webhook:
    """Change an endpoint's URL, event types or description, or enable or disable it (disabling fails its
    pending deliveries; enabled again, it gets the events from then on)."""
    assert caller.agent_id is not None
    return await services.webhooks.update(caller.agent_id, params)


@operation("webhooks.delete", scope=Scope.WEBHOOKS_MANAGE, rate=RateClass.WRITE,
           route=("DELETE", "/api/webhooks/{webhook_id}"), destructive=True, idempotent=True)
async def delete(services: Services, caller: Principal, params: WebhookRef) -> DeletedWebhook:
    """Delete an endpoint, with its delivery log; nothing more is sent to it."""
    assert caller.agent_id is not None
    return await services.webhooks.delete(caller.agent_id, params.webhook_id)


@operation("webhooks.rotate_secret", scope=Scope.WEBHOOKS_MANAGE, rate=RateClass.WRITE,
           route=("POST", "/api/webhooks/{webhook_id}/rotate-secret"))
async def rotate_secret(services: Services, caller: Principal, params: RotateSecretParams) -> RotatedSecret:
    """A new signing secret, shown once; for `grace_seconds` (default a day) deliveries carry signatures by the
    old and the new one, so a receiver can switch without missing any."""
    assert caller.agent_id is not None
    return await services.webhooks.rotate_secret(caller.agent_id, params)


@operation("webhooks.deliveries", scope=Scope.WEBHOOKS_MANAGE, rate=RateClass.READ,
           route=("GET", "/api/webhooks/{webhook_id}/deliveries"), read_only=True)
async def deliveries(services: Services, caller: Principal, params: DeliveriesParams) -> DeliveryPage:
    """An endpoint's delivery log, newest first: each delivery's body, status, and every attempt (when, the
    response code or the error, how long it took)."""
    assert caller.agent_id is not None
    return await services.webhooks.deliveries(caller.agent_id, params)


@operation("webhooks.redeliver", scope=Scope.WEBHOOKS_MANAGE, rate=RateClass.WRITE,
           route=("POST", "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"))
async def redeliver(services: Services, caller: Principal, params: RedeliverParams) -> Redelivery:
    """Send a delivery again now, with the same `webhook-id` (receivers dedupe on it): one more attempt for one
    that ended; one still being retried keeps its retries."""
    assert caller.agent_id is not None
    return await services.webhooks.redeliver(caller.agent_id, params)
