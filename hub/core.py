"""The hub: the services wired to a store, and the one dispatch path every transport calls."""

import json
import logging
import time
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
from anyio.abc import TaskStatus
from pydantic import BaseModel, ValidationError

from protocol.errors import Forbidden, HubError, Internal, InvalidRequest, MethodNotFound, Unauthorized
from protocol.events import SUBSCRIBE_METHOD, SubscribeParams
from storage.store import Store, StoreClosed

from .bus import EventBus, LocalEventBus
from .clock import Clock
from .cluster import RedisCluster
from .config import Settings
from .metrics import Metrics
from .operations import OPERATIONS, Operation
from .principal import Principal
from .ratelimit import RateLimiter, rate_key
from .secrets import ServerKeys
from .services import Services
from .services.agents import AgentService
from .services.blocks import BlockService
from .services.conversations import ConversationService
from .services.credential_state import CredentialState
from .services.events import EventService, EventStream
from .services.identity import IdentityService, Verified
from .services.messages import MessageService

log = logging.getLogger(__name__)


def validation_details(error: ValidationError) -> dict[str, Any]:
    """Field-level details of a validation failure, without echoing the input back."""
    return {
        "errors": [
            {"field": ".".join(str(part) for part in item["loc"]) or None, "message": item["msg"], "type": item["type"]}
            for item in error.errors(include_url=False, include_input=False)
        ]
    }


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class Hub:
    """Owns the services and dispatches operations to them. Start `run` before dispatching."""

    def __init__(
        self, settings: Settings, store: Store, keys: ServerKeys, clock: Clock | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock or Clock()
        self.metrics = Metrics()
        self.limiter = RateLimiter(settings, self.clock)
        self.credential_state = CredentialState(store, self.clock, settings.access_token_ttl)
        self.cluster = RedisCluster(settings, store, self.credential_state) if settings.redis_url else None
        self.bus: EventBus = self.cluster or LocalEventBus(settings.event_buffer)
        self.services = Services(
            identity=IdentityService(store, self.clock, settings, keys, self.credential_state, self.limiter),
            agents=AgentService(store, self.clock, self.credential_state),
            conversations=ConversationService(store, self.clock, settings, self.bus),
            messages=MessageService(store, self.clock, settings, self.bus),
            blocks=BlockService(store, self.clock),
            events=EventService(store, self.bus),
        )
        self.started_monotonic = self.clock.monotonic()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the store's writer (and the link to other nodes) until `close`; ready once state is loaded."""
        async with anyio.create_task_group() as tg:
            await tg.start(self.store.run)
            await self.credential_state.load()
            if self.cluster is not None:
                await tg.start(self.cluster.run)
            task_status.started()

    def close(self) -> None:
        """Stop taking writes; queued writes still commit before `run` returns."""
        if self.cluster is not None:
            self.cluster.close()
        self.store.close()

    async def authenticate(self, credential: str | None, address: str) -> Principal:
        """The caller behind a transport's credential (None: anonymous).

        Raises:
            Unauthorized, Forbidden: see `IdentityService.authenticate`.
        """
        if not credential:
            return Principal.anonymous(address)
        return await self.services.identity.authenticate(credential, address)

    async def verify(self, credential: str, address: str) -> Verified:
        """`authenticate` for a connection that keeps its caller: see `IdentityService.verify`."""
        return await self.services.identity.verify(credential, address)

    def still_valid(self, verified: Verified) -> bool:
        """Whether a connection may keep trusting `verified` without authenticating again."""
        return self.services.identity.still_valid(verified)

    def operation(self, name: str) -> Operation:
        try:
            return OPERATIONS[name]
        except KeyError:
            raise MethodNotFound(f"no operation named {name!r}") from None

    async def dispatch(
        self, caller: Principal, name: str, params: Mapping[str, Any] | None, *, from_strings: bool = False
    ) -> dict[str, Any]:
        """Run operation `name` for `caller`; return its result as JSON-ready data.

        The one path for every transport: look up, authorize, rate-limit, validate, run, measure.
        `params` is decoded JSON, or with `from_strings` a query string's values (REST GET/DELETE).

        Raises:
            HubError: every failure, already mapped; anything unexpected becomes `Internal`.
        """
        started = time.perf_counter()
        outcome = "ok"
        try:
            op = self.operation(name)
            self._authorize(op, caller)
            self.limiter.take(op.rate_class, rate_key(caller.address, caller.agent_id))
            result: BaseModel = await op.handler(self.services, caller, self._validate(op, params, from_strings))
            return result.model_dump(mode="json")
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

    def events_stream(
        self, caller: Principal, params: Mapping[str, Any] | None
    ) -> AbstractAsyncContextManager[EventStream]:
        """The live event stream behind the WebSocket's `events.subscribe`, checked like `events.list`.

        Not in the operation table: its result is a stream, which only a connection can carry.

        Raises:
            HubError: the caller may not read events, is rate-limited, or `params` are invalid.
        """
        op = self.operation("events.list")
        self._authorize(op, caller)
        self.limiter.take(op.rate_class, rate_key(caller.address, caller.agent_id))
        if params is not None and not isinstance(params, Mapping):
            raise InvalidRequest("params must be an object of named parameters")
        try:
            after = SubscribeParams.model_validate(params or {}).after
        except ValidationError as error:
            raise InvalidRequest(f"invalid params for {SUBSCRIBE_METHOD}", validation_details(error)) from None
        assert caller.agent_id is not None
        return self.services.events.stream(caller.agent_id, after)

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
        query strings are parsed by each field's type."""
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise InvalidRequest("params must be an object of named parameters")
        if _has_nul(params):
            # PostgreSQL cannot store U+0000 in text; no legitimate field needs it.
            raise InvalidRequest("strings must not contain the NUL character (U+0000)")
        try:
            if from_strings:
                return op.params.model_validate_strings(params, strict=True)
            return op.params.model_validate_json(json.dumps(params), strict=True)
        except ValidationError as error:
            raise InvalidRequest(f"invalid params for {op.name}", validation_details(error)) from None
