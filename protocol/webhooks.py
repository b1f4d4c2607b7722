"""Models of triggers (a workflow started by an API key) and webhooks (signed HTTP POSTs of events).

A webhook endpoint is a URL an agent registers with the event types it wants (`execution.*`,
`message.created`, …): every event of those types that reaches the agent's own event stream is
POSTed to it, signed as Standard Webhooks asks (https://www.standardwebhooks.com):

    webhook-id: <delivery id>            the same on every attempt of one delivery (dedupe on it)
    webhook-timestamp: <unix seconds>    of this attempt
    webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">  (space-separated, one per valid secret)

The body is `{"type": …, "timestamp": …, "data": <the event as the event stream shows it>}`.
"""

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import AfterValidator, Field

from .common import Cursor, Model, PageLimit
from .events import EventType
from .workflows import WorkflowId

MAX_WEBHOOKS: Final = 20
"""Endpoints one agent may have."""
MAX_EVENT_TYPES: Final = 32
MAX_URL_CHARS: Final = 2048
DEFAULT_GRACE_SECONDS: Final = 24 * 3600
MAX_GRACE_SECONDS: Final = 7 * 24 * 3600

_PATTERN: Final = re.compile(r"\*|[a-z_]+\.\*|[a-z_]+\.[a-z_]+")


def matches(pattern: str, event_type: str) -> bool:
    """Whether an event type is one a subscription pattern (`*`, `execution.*`, `message.created`) asks for."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return event_type == pattern


def _known_pattern(pattern: str) -> str:
    if not _PATTERN.fullmatch(pattern) or not any(matches(pattern, known) for known in EventType):
        raise ValueError(f"{pattern!r} names no event type: use one like `message.created`, a family like "
                         "`execution.*`, or `*`")
    return pattern


EventTypePattern = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_known_pattern)]
EventTypes = Annotated[list[EventTypePattern], Field(max_length=MAX_EVENT_TYPES, description=(
    "The event types to receive: exact (`message.created`), a family (`execution.*`) or `*`. Empty: only the "
    "results of runs triggered with this URL as their `webhook_url`."))]
WebhookUrl = Annotated[str, Field(min_length=1, max_length=MAX_URL_CHARS, description=(
    "An http(s) URL the hub may reach: public addresses only, unless the operator allows more "
    "(PARLEY_OUTBOUND_ALLOW)."))]
WebhookId = Annotated[str, Field(pattern=r"^whk_[0-9a-z]{26}$", description="A webhook endpoint's id (`whk_…`).")]
DeliveryId = Annotated[str, Field(pattern=r"^whd_[0-9a-z]{26}$", description="A delivery's id (`whd_…`), "
                                  "sent as its `webhook-id` header.")]
ExecutionId = Annotated[str, Field(pattern=r"^exe_[0-9a-z]{26}$", description="A run's id (`exe_…`).")]


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Webhook(Model):
    webhook_id: str
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None = Field(description="Why the hub disabled it (sustained failure), or null.")
    disabled_at: datetime | None
    previous_secret_expires_at: datetime | None = Field(
        description="Until then deliveries are signed with the previous secret too (after `webhooks.rotate_secret`).")
    created_at: datetime
    updated_at: datetime


class CreateWebhookParams(Model):
    url: WebhookUrl
    event_types: EventTypes
    description: Annotated[str, Field(max_length=256)] = ""


class CreatedWebhook(Model):
    webhook: Webhook
    secret: str = Field(description="The signing secret (`whsec_…`), shown once: verify each delivery with it.")


class WebhookRef(Model):
    webhook_id: WebhookId


class UpdateWebhookParams(Model):
    webhook_id: WebhookId
    url: WebhookUrl | None = None
    event_types: EventTypes | None = None
    description: Annotated[str, Field(max_length=256)] | None = None
    enabled: bool | None = Field(default=None, description="Enabling a disabled endpoint clears its reason; it "
                                 "receives the events from then on.")


class ListWebhooksParams(Model):
    limit: PageLimit = 50
    cursor: Cursor | None = None


class WebhookPage(Model):
    items: list[Webhook]
    next_cursor: str | None


class DeletedWebhook(Model):
    webhook_id: str


class RotateSecretParams(Model):
    webhook_id: WebhookId
    grace_seconds: Annotated[int, Field(ge=0, le=MAX_GRACE_SECONDS)] = Field(
        default=DEFAULT_GRACE_SECONDS, description="How long the old secret still signs too (both signatures are "
        "sent), so receivers can switch without missing a delivery.")


class RotatedSecret(Model):
    webhook: Webhook
    secret: str = Field(description="The new signing secret, shown once.")


class Attempt(Model):
    at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; null when none came (see `error`).")
    error: str | None = Field(description="Why the attempt failed: no response, a timeout, a refused address.")
    duration_ms: float
    response: str = Field(description="The start of the response body (at most 256 characters).")
    manual: bool = Field(description="Made by `webhooks.redeliver`.")


class Delivery(Model):
    delivery_id: str
    webhook_id: str
    event_type: str
    status: DeliveryStatus
    payload: dict[str, Any] = Field(description="The body it POSTs: type, timestamp, data (its event as it stands: "
                                    "what was erased since, such as a deleted message's body, is not sent).")
    attempts: list[Attempt]
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None


class DeliveriesParams(Model):
    webhook_id: WebhookId
    status: DeliveryStatus | None = None
    limit: PageLimit = 50
    cursor: Cursor | None = None


class DeliveryPage(Model):
    items: list[Delivery]
    next_cursor: str | None


class RedeliverParams(Model):
    webhook_id: WebhookId
    delivery_id: DeliveryId


class Redelivery(Model):
    """A delivery queued to be sent again now."""

    delivery_id: str
    webhook_id: str
    status: DeliveryStatus


class TriggerParams(Model):
    workflow_id: WorkflowId
    input: Any = Field(default_factory=dict)
    webhook_url: WebhookUrl | None = Field(default=None, description=(
        "Where the run's result goes when it ends (its `execution.*` event, signed). The endpoint you registered "
        "with this URL signs it; with none, one is registered now and its secret comes back once here."))
    idempotency_key: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="The same key (for this workflow) returns the first run instead of a second one.")


class TriggeredExecution(Model):
    execution_id: str
    workflow_id: str
    version: int
    webhook_id: str | None = Field(description="The endpoint the result goes to, with `webhook_url`.")
    webhook_secret: str | None = Field(description="That endpoint's secret, when this trigger registered it "
                                       "(shown once).")


class TriggerStatusParams(Model):
    execution_id: ExecutionId
