"""Webhooks: endpoints an agent registers, the events fanned out to them, deliveries signed and retried;
and triggers, runs started by an API key whose result may go to a webhook.

Fan-out. Each endpoint keeps a cursor into its owner's event stream. A node with news for an owner
(its own commits, told by `published`; anyone's, found every `job_poll_seconds`) reads the events past
the cursor, makes a delivery for each one the endpoint subscribes to (and for the end of each run that
reports to it), queues a delivery job for each, and moves the cursor: in one transaction that moves
the cursor only from where it read it, so two nodes never fan out the same event twice.

Delivery. A durable job POSTs the body through the SSRF guard (`hub.outbound`), signed with the
endpoint's secret (both secrets during a rotation's grace), and records the attempt. A failed
attempt is tried again after `webhook_retry_seconds`, doubling, while the delivery is younger than
`webhook_retry_window_seconds`; then it fails, and an endpoint that failed every attempt since that
delivery's first is disabled, with the reason. Secrets are kept sealed (`ServerKeys.sealer`).
"""

import json
import logging
import math
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, Final

import anyio
from anyio.abc import TaskStatus
from sqlalchemy import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from protocol import ids
from protocol.errors import Conflict, InvalidRequest, NotFound, QuotaExceeded
from protocol.events import Event, EventType
from protocol.webhooks import (
    MAX_WEBHOOKS,
    Attempt,
    CreatedWebhook,
    CreateWebhookParams,
    DeletedWebhook,
    DeliveriesParams,
    Delivery,
    DeliveryPage,
    DeliveryStatus,
    ListWebhooksParams,
    RedeliverParams,
    Redelivery,
    RotatedSecret,
    RotateSecretParams,
    TriggeredExecution,
    TriggerParams,
    UpdateWebhookParams,
    Webhook,
    WebhookPage,
    matches,
)
from protocol.workflows import Execution, RunWorkflowParams, StartedExecution, Trigger
from storage.queries import events as event_queries
from storage.queries import jobs as job_queries
from storage.queries import webhooks as webhook_queries
from storage.store import Store, StoreClosed

from .. import webhook_signing
from ..clock import Clock
from ..config import Settings
from ..jobs import Deliveries, Job, JobKind, JobRunner, LeaseLost, Work
from ..outbound import OutboundClient, OutboundError, OutboundFailed, OutboundRefused
from ..secrets import ServerKeys
from ..workflows import ADVANCE_JOB
from . import cursors
from .timeline import event_of
from .workflows import WorkflowService

log = logging.getLogger(__name__)

DELIVER_JOB: Final = "webhooks.deliver"
FAN_OUT_BATCH: Final = 200
CLAIM_BATCH: Final = 8
BACKOFF_CAP_SECONDS: Final = 6 * 3600.0
RESPONSE_EXCERPT: Final = 256
RUN_ENDED: Final = frozenset({EventType.EXECUTION_COMPLETED, EventType.EXECUTION_FAILED,
                              EventType.EXECUTION_CANCELLED, EventType.EXECUTION_TIMED_OUT})


class _Raced(Exception):
    """Another node fanned out this endpoint's events first: this transaction's deliveries are its twins."""


def _not_found(webhook_id: str) -> NotFound:
    return NotFound(f"no webhook {webhook_id!r}", {"webhook_id": webhook_id})


def webhook_of(row: RowMapping) -> Webhook:
    return Webhook(webhook_id=row["id"], url=row["url"], description=row["description"],
                   event_types=row["event_types"], enabled=row["enabled"], disabled_reason=row["disabled_reason"],
                   disabled_at=row["disabled_at"], previous_secret_expires_at=row["previous_secret_until"],
                   created_at=row["created_at"], updated_at=row["updated_at"])


def _attempt_of(row: RowMapping) -> Attempt:
    return Attempt(at=row["at"], status_code=row["status_code"], error=row["error"], duration_ms=row["duration_ms"],
                   response=row["response"], manual=row["manual"])


def _deliveries_with_attempts(conn: Connection, rows: list[RowMapping]) -> list[Delivery]:
    attempts: dict[str, list[Attempt]] = {row["id"]: [] for row in rows}
    for attempt in webhook_queries.attempts_of(conn, list(attempts)):
        attempts[attempt["delivery_id"]].append(_attempt_of(attempt))
    sent = webhook_queries.events_at(conn, [row["event_cursor"] for row in rows])
    return [Delivery(delivery_id=row["id"], webhook_id=row["endpoint_id"], event_type=row["event_type"],
                     status=DeliveryStatus(row["status"]), payload=_body(sent.get(row["event_cursor"])),
                     attempts=attempts[row["id"]],
                     next_attempt_at=row["next_attempt_at"], created_at=row["created_at"],
                     delivered_at=row["delivered_at"]) for row in rows]


def _body(event_row: RowMapping | None) -> dict[str, Any]:
    """A delivery's body, as Standard Webhooks shapes it: its event as the event stream shows it now (with what
    was erased from it since gone) is the `data`."""
    if event_row is None:
        return {}
    event = event_of(event_row)
    return {"type": event.type.value, "timestamp": event.at.isoformat(), "data": event.model_dump(mode="json")}


class WebhookService:
    def __init__(self, store: Store, clock: Clock, settings: Settings, jobs: JobRunner, outbound: OutboundClient,
                 keys: ServerKeys, workflows: WorkflowService) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._jobs = jobs
        self._outbound = outbound
        self._sealer = keys.sealer("webhook secrets")
        self._workflows = workflows
        self._wakeup = anyio.Event()
        self._watched: set[str] = set()
        """Owners of enabled endpoints, as this node last read them: their events wake the fan-out."""

    # -- endpoints -------------------------------------------------------------------------------------------

    async def _check_url(self, url: str, field: str) -> None:
        """Raises:
            InvalidRequest: the SSRF guard refuses the URL, or its host does not resolve.
        """
        try:
            await self._outbound.check(url)
        except OutboundRefused as error:
            raise InvalidRequest(f"{field}: {error.message}", {"field": field, "reason": error.reason.value}) from None
        except OutboundFailed as error:
            raise InvalidRequest(f"{field}: {error.message}", {"field": field}) from None

    def _insert_endpoint(self, conn: Connection, owner_id: str, url: str, event_types: list[str],
                         description: str) -> tuple[RowMapping, str]:
        if (count := webhook_queries.count_of(conn, owner_id)) >= MAX_WEBHOOKS:
            raise QuotaExceeded(f"an agent may have at most {MAX_WEBHOOKS} webhooks", quota="webhooks",
                                limit=MAX_WEBHOOKS, used=count)
        now = self._clock.now()
        webhook_id = ids.new_id(ids.WEBHOOK)
        secret = webhook_signing.new_secret()
        row = {"id": webhook_id, "owner_id": owner_id, "url": url, "description": description,
               "event_types": event_types, "secret": self._sealer.seal(secret, webhook_id), "previous_secret": None,
               "previous_secret_until": None, "enabled": True, "disabled_reason": None, "disabled_at": None,
               "failing_since": None, "event_cursor": event_queries.head(conn), "created_at": now, "updated_at": now}
        webhook_queries.insert_endpoint(conn, row)
        self._watched.add(owner_id)
        return row, secret  # type: ignore[return-value]

    async def create(self, caller_id: str, params: CreateWebhookParams) -> CreatedWebhook:
        await self._check_url(params.url, "url")
        row, secret = await self._store.write(lambda conn: self._insert_endpoint(
            conn, caller_id, params.url, list(dict.fromkeys(params.event_types)), params.description))
        return CreatedWebhook(webhook=webhook_of(row), secret=secret)

    @staticmethod
    def _owned(conn: Connection, caller_id: str, webhook_id: str) -> RowMapping:
        row = webhook_queries.get_endpoint(conn, webhook_id)
        if row is None or row["owner_id"] != caller_id:
            raise _not_found(webhook_id)
        return row

    async def get(self, caller_id: str, webhook_id: str) -> Webhook:
        return webhook_of(await self._store.read(lambda conn: self._owned(conn, caller_id, webhook_id)))

    async def list_webhooks(self, caller_id: str, params: ListWebhooksParams) -> WebhookPage:
        position = cursors.decode(params.cursor, str)

        def read(conn: Connection) -> WebhookPage:
            rows = webhook_queries.endpoints_of(conn, caller_id, before_id=position[0] if position else None,
                                                limit=params.limit + 1)
            more, rows = len(rows) > params.limit, rows[: params.limit]
            return WebhookPage(items=[webhook_of(row) for row in rows],
                               next_cursor=cursors.encode(rows[-1]["id"]) if more else None)

        return await self._store.read(read)

    async def update(self, caller_id: str, params: UpdateWebhookParams) -> Webhook:
        if params.url is not None:
            await self._check_url(params.url, "url")
        now = self._clock.now()

        def write(conn: Connection) -> RowMapping:
            row = self._owned(conn, caller_id, params.webhook_id)
            values: dict[str, Any] = {"updated_at": now}
            if params.url is not None:
                values["url"] = params.url
            if params.event_types is not None:
                values["event_types"] = list(dict.fromkeys(params.event_types))
            if params.description is not None:
                values["description"] = params.description
            if params.enabled is True and not row["enabled"]:
                # From now on: what happened while it was off is not sent (redeliver it if wanted).
                values |= {"enabled": True, "disabled_reason": None, "disabled_at": None, "failing_since": None,
                           "event_cursor": event_queries.head(conn)}
                self._watched.add(caller_id)
            elif params.enabled is False and row["enabled"]:
                values |= self._disabled(conn, row["id"], "disabled by its owner", now)
            webhook_queries.update_endpoint(conn, row["id"], values)
            return {**row, **values}  # type: ignore[return-value]

        return webhook_of(await self._store.write(write))

    @staticmethod
    def _disabled(conn: Connection, endpoint_id: str, reason: str, now: datetime) -> dict[str, Any]:
        """Fail the endpoint's pending deliveries (redeliver them once it is enabled); its new values."""
        for delivery_id in webhook_queries.with_status(conn, endpoint_id, DeliveryStatus.PENDING):
            job_queries.cancel(conn, DELIVER_JOB, delivery_id)
            webhook_queries.update_delivery(conn, delivery_id, {"status": DeliveryStatus.FAILED,
                                                                "next_attempt_at": None})
        return {"enabled": False, "disabled_reason": reason, "disabled_at": now}

    async def delete(self, caller_id: str, webhook_id: str) -> DeletedWebhook:
        def write(conn: Connection) -> None:
            self._owned(conn, caller_id, webhook_id)
            for delivery_id in webhook_queries.with_status(conn, webhook_id, DeliveryStatus.PENDING):
                job_queries.cancel(conn, DELIVER_JOB, delivery_id)
            webhook_queries.delete_endpoint(conn, webhook_id)

        await self._store.write(write)
        return DeletedWebhook(webhook_id=webhook_id)

    async def rotate_secret(self, caller_id: str, params: RotateSecretParams) -> RotatedSecret:
        now = self._clock.now()
        secret = webhook_signing.new_secret()

        def write(conn: Connection) -> RowMapping:
            row = self._owned(conn, caller_id, params.webhook_id)
            keep_old = params.grace_seconds > 0
            values = {"secret": self._sealer.seal(secret, row["id"]),
                      "previous_secret": row["secret"] if keep_old else None,
                      "previous_secret_until": now + timedelta(seconds=params.grace_seconds) if keep_old else None,
                      "updated_at": now}
            webhook_queries.update_endpoint(conn, row["id"], values)
            return {**row, **values}  # type: ignore[return-value]

        return RotatedSecret(webhook=webhook_of(await self._store.write(write)), secret=secret)

    def _secrets(self, endpoint: RowMapping, now: datetime) -> list[str]:
        """What signs a delivery now: the secret, and the previous one during its grace."""
        secrets = [self._sealer.open(endpoint["secret"], endpoint["id"])]
        if endpoint["previous_secret"] is not None and endpoint["previous_secret_until"] > now:
            secrets.append(self._sealer.open(endpoint["previous_secret"], endpoint["id"]))
        return secrets

    # -- deliveries -----------------------------------------------------------------------------------------

    async def deliveries(self, caller_id: str, params: DeliveriesParams) -> DeliveryPage:
        position = cursors.decode(params.cursor, str)

        def read(conn: Connection) -> DeliveryPage:
            self._owned(conn, caller_id, params.webhook_id)
            rows = webhook_queries.deliveries_of(conn, params.webhook_id,
                                                 status=params.status.value if params.status else None,
                                                 before_id=position[0] if position else None, limit=params.limit + 1)
            more, rows = len(rows) > params.limit, rows[: params.limit]
            return DeliveryPage(items=_deliveries_with_attempts(conn, rows),
                                next_cursor=cursors.encode(rows[-1]["id"]) if more else None)

        return await self._store.read(read)

    async def redeliver(self, caller_id: str, params: RedeliverParams) -> Redelivery:
        now = self._clock.now()

        def write(conn: Connection) -> None:
            endpoint = self._owned(conn, caller_id, params.webhook_id)
            row = webhook_queries.get_delivery(conn, params.delivery_id)
            if row is None or row["endpoint_id"] != endpoint["id"]:
                raise NotFound(f"webhook {params.webhook_id!r} has no delivery {params.delivery_id!r}",
                               {"webhook_id": params.webhook_id, "delivery_id": params.delivery_id})
            if not endpoint["enabled"]:
                raise Conflict("the webhook is disabled: enable it first (webhooks.update)",
                               {"webhook_id": params.webhook_id})
            # A delivery still being retried keeps its retries; one that ended is sent once more.
            retries = row["status"] == DeliveryStatus.PENDING
            values = {"status": DeliveryStatus.PENDING, "next_attempt_at": now}
            webhook_queries.update_delivery(conn, row["id"], values)
            job_queries.ensure(conn, DELIVER_JOB, row["id"], {"manual": True, "retries": retries}, now, now)

        await self._store.write(write)
        self._jobs.notify(DELIVER_JOB)
        return Redelivery(delivery_id=params.delivery_id, webhook_id=params.webhook_id, status=DeliveryStatus.PENDING)

    def job(self) -> JobKind:
        # Claimed a few at a time (one write claims them all), each sent and recorded on its own, so a slow
        # receiver holds up only its own delivery's record.
        batch = min(CLAIM_BATCH, self._settings.webhook_concurrency)
        return JobKind(DELIVER_JOB, self._deliver, batch=batch,
                       concurrency=math.ceil(self._settings.webhook_concurrency / batch),
                       lease_seconds=self._settings.outbound_timeout_seconds + 30, given_up=self._given_up)

    def _given_up(self, conn: Connection, job: Job, reason: str) -> Deliveries:
        webhook_queries.update_delivery(conn, job.subject, {"status": DeliveryStatus.FAILED, "next_attempt_at": None})
        return []

    async def _deliver(self, work: Work) -> None:
        async with anyio.create_task_group() as tg:
            for job in work.jobs:
                tg.start_soon(self._deliver_one, work, job)

    async def _deliver_one(self, work: Work, job: Job) -> None:
        try:
            await self._attempt(work, job)
        except LeaseLost:
            pass  # another node has it now
        except (StoreClosed, anyio.get_cancelled_exc_class()):
            raise
        except Exception:  # left uncompleted, the runner tries it again later; the others go on
            log.exception("webhook delivery %s failed", job.subject)

    async def _attempt(self, work: Work, job: Job) -> None:
        def read(conn: Connection) -> tuple[RowMapping | None, RowMapping | None, dict[str, Any]]:
            row = webhook_queries.get_delivery(conn, job.subject)
            if row is None:
                return None, None, {}
            sent = webhook_queries.events_at(conn, [row["event_cursor"]]).get(row["event_cursor"])
            return row, webhook_queries.get_endpoint(conn, row["endpoint_id"]), _body(sent)

        delivery, endpoint, payload = await self._store.read(read)
        if delivery is None or endpoint is None or delivery["status"] != DeliveryStatus.PENDING:
            await work.complete([job])
            return
        if not endpoint["enabled"]:
            await work.complete([job], lambda conn, _: webhook_queries.update_delivery(
                conn, job.subject, {"status": DeliveryStatus.FAILED, "next_attempt_at": None}))
            return
        now = self._clock.now()
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers = webhook_signing.headers(self._secrets(endpoint, now), delivery["id"], int(now.timestamp()), body)
        started = self._clock.monotonic()
        status_code: int | None = None
        response = ""
        try:
            # A redirect is a failure, as with Stripe's and GitHub's webhooks: the URL registered is the one signed for.
            answer = await self._outbound.request("POST", endpoint["url"], headers=headers, content=body,
                                                  max_response_bytes=64 * 1024, max_redirects=0)
            status_code = answer.status
            response = answer.body[:RESPONSE_EXCERPT * 4].decode("utf-8", "replace")[:RESPONSE_EXCERPT]
            error = None if 200 <= answer.status < 300 else f"the receiver answered {answer.status}"
        except OutboundError as failure:
            error = failure.message
        attempt = {"delivery_id": delivery["id"], "at": now, "status_code": status_code, "error": error,
                   "duration_ms": round((self._clock.monotonic() - started) * 1000, 1), "response": response,
                   "manual": bool(job.payload.get("manual"))}
        attempts = delivery["attempts"] + 1
        if error is None:
            await work.complete([job], lambda conn, _: self._delivered(conn, endpoint["id"], attempt, attempts, now))
            return
        delay = min(BACKOFF_CAP_SECONDS, self._settings.webhook_retry_seconds * 2 ** min(attempts - 1, 32))
        retry_at = self._clock.now() + timedelta(seconds=delay)  # from the attempt's end: a timeout is not a wait
        window_ends = delivery["created_at"] + timedelta(seconds=self._settings.webhook_retry_window_seconds)
        if job.payload.get("retries", True) and retry_at <= window_ends:
            def retry(conn: Connection) -> tuple[datetime, None]:
                self._failed_attempt(conn, endpoint["id"], attempt, now)
                webhook_queries.update_delivery(conn, delivery["id"], {"attempts": attempts,
                                                                       "next_attempt_at": retry_at})
                return retry_at, None

            await work.defer(job, retry)
        else:
            await work.complete([job], lambda conn, _: self._gave_up(conn, endpoint["id"], attempt, attempts, now,
                                                                     bool(job.payload.get("manual"))))

    @staticmethod
    def _delivered(conn: Connection, endpoint_id: str, attempt: dict[str, Any], attempts: int, now: datetime) -> None:
        webhook_queries.insert_attempt(conn, attempt)
        webhook_queries.update_delivery(conn, attempt["delivery_id"], {
            "status": DeliveryStatus.DELIVERED, "attempts": attempts, "next_attempt_at": None, "delivered_at": now})
        webhook_queries.update_endpoint(conn, endpoint_id, {"failing_since": None})

    @staticmethod
    def _failed_attempt(conn: Connection, endpoint_id: str, attempt: dict[str, Any], now: datetime) -> RowMapping:
        """Record a failed attempt; the endpoint as it stands after it."""
        webhook_queries.insert_attempt(conn, attempt)
        endpoint = webhook_queries.get_endpoint(conn, endpoint_id)
        assert endpoint is not None
        if endpoint["failing_since"] is None:
            webhook_queries.update_endpoint(conn, endpoint_id, {"failing_since": now})
            return {**endpoint, "failing_since": now}  # type: ignore[return-value]
        return endpoint

    def _gave_up(self, conn: Connection, endpoint_id: str, attempt: dict[str, Any], attempts: int, now: datetime,
                 manual: bool) -> None:
        endpoint = self._failed_attempt(conn, endpoint_id, attempt, now)
        webhook_queries.update_delivery(conn, attempt["delivery_id"], {
            "status": DeliveryStatus.FAILED, "attempts": attempts, "next_attempt_at": None})
        first = webhook_queries.attempts_of(conn, [attempt["delivery_id"]])[0]["at"]
        if manual or not endpoint["enabled"] or endpoint["failing_since"] > first:
            return
        # Every attempt to it failed for a whole retry window: it is gone or broken, stop sending.
        reason = (f"every delivery failed since {endpoint['failing_since']:%Y-%m-%d %H:%M:%S} UTC, over the "
                  f"{self._settings.webhook_retry_window_seconds:g} s retry window; the last: {attempt['error']}")
        webhook_queries.update_endpoint(conn, endpoint_id, {**self._disabled(conn, endpoint_id, reason, now),
                                                            "updated_at": now})

    # -- fan-out ---------------------------------------------------------------------------------------------

    def published(self, events: Collection[tuple[Event, Collection[str]]]) -> None:
        """Committed events (the bus's tap): wake the fan-out if one is for an agent with an endpoint."""
        if any(not self._watched.isdisjoint(recipients) for _, recipients in events):
            self._wakeup.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Fan events out to endpoints until cancelled."""
        task_status.started()
        while True:
            with anyio.move_on_after(self._settings.job_poll_seconds):
                await self._wakeup.wait()
            self._wakeup = anyio.Event()
            try:
                self._watched = await self._store.read(webhook_queries.watching_owners)
                # No enabled endpoint (most hubs): nothing can be behind, so the poll is one read.
                behind = await self._store.read(webhook_queries.behind) if self._watched else []
                for endpoint_id in behind:
                    await self._fan_out(endpoint_id)
            except StoreClosed:
                return
            except Exception:  # a database hiccup: look again at the next wake-up
                log.exception("fanning events out to webhooks failed")

    async def _fan_out(self, endpoint_id: str) -> None:
        more = True
        while more:
            try:
                made, more = await self._store.write(lambda conn: self._fan_out_batch(conn, endpoint_id))
            except (_Raced, IntegrityError):  # another node fanned these out first (its deliveries' twins clash)
                return
            if made:
                self._jobs.notify(DELIVER_JOB)

    def _fan_out_batch(self, conn: Connection, endpoint_id: str) -> tuple[int, bool]:
        """Deliveries for the next events past the endpoint's cursor: how many, and whether more events wait."""
        endpoint = webhook_queries.get_endpoint(conn, endpoint_id)
        if endpoint is None or not endpoint["enabled"]:
            return 0, False
        rows = event_queries.list_for_agent(conn, endpoint["owner_id"], after=endpoint["event_cursor"],
                                            limit=FAN_OUT_BATCH)
        if not rows:
            return 0, False
        events = [event_of(row) for row in rows]
        ended = {event.execution.execution_id for event in events if event.type in RUN_ENDED and event.execution}
        reporting = webhook_queries.runs_reporting_to(conn, endpoint_id, ended)
        now = self._clock.now()
        made = [{"id": ids.new_id(ids.DELIVERY), "endpoint_id": endpoint_id, "event_cursor": event.cursor,
                 "event_type": event.type.value, "status": DeliveryStatus.PENDING.value,
                 "attempts": 0, "next_attempt_at": now, "created_at": now, "delivered_at": None}
                for event in events if _wanted(endpoint["event_types"], event, reporting)]
        webhook_queries.insert_deliveries(conn, made)
        for row in made:
            job_queries.ensure(conn, DELIVER_JOB, row["id"], {"manual": False, "retries": True}, now, now)
        if not webhook_queries.advance_cursor(conn, endpoint_id, endpoint["event_cursor"], events[-1].cursor):
            raise _Raced(endpoint_id)
        return len(made), len(rows) == FAN_OUT_BATCH

    # -- triggers --------------------------------------------------------------------------------------------

    async def trigger(self, caller_id: str, params: TriggerParams) -> TriggeredExecution:
        url = params.webhook_url
        if url is not None:
            await self._check_url(url, "webhook_url")
        reporting: dict[str, str | None] = {"webhook_id": None, "webhook_secret": None}

        def report_to_webhook(conn: Connection, execution_id: str) -> None:
            assert url is not None
            row = webhook_queries.endpoint_with_url(conn, caller_id, url)
            if row is None:
                row, reporting["webhook_secret"] = self._insert_endpoint(
                    conn, caller_id, url, [], "made by a trigger: the results of runs triggered with this URL")
            webhook_queries.attach_run(conn, execution_id, row["id"])
            reporting["webhook_id"] = row["id"]

        run = RunWorkflowParams(workflow_id=params.workflow_id, input=params.input,
                                idempotency_key=params.idempotency_key)
        start = self._workflows.starter(caller_id, run, Trigger.API_KEY, self._clock.now())

        def write(conn: Connection) -> StartedExecution:
            started = start(conn)
            if url is not None:
                # A repeated idempotency key returns the first run, which reports where it did (if anywhere).
                reporting["webhook_id"] = webhook_queries.run_endpoint(conn, started.execution_id)
                if reporting["webhook_id"] is None:
                    report_to_webhook(conn, started.execution_id)
            return started

        with await self._workflows.counted_run(caller_id, run):
            try:
                started = await self._store.write(write)
            except IntegrityError:  # the same idempotency key, at the same moment, on another node
                started = await self._store.write(write)
        self._jobs.notify(ADVANCE_JOB)
        return TriggeredExecution(execution_id=started.execution_id, workflow_id=started.workflow_id,
                                  version=started.version, **reporting)

    async def trigger_status(self, caller_id: str, execution_id: str) -> Execution:
        return await self._workflows.get_execution(caller_id, execution_id)


def _wanted(patterns: list[str], event: Event, reporting: set[str]) -> bool:
    if any(matches(pattern, event.type) for pattern in patterns):
        return True
    return event.type in RUN_ENDED and event.execution is not None and event.execution.execution_id in reporting

