"""Several hub nodes on one database: live events and credential changes cross nodes through Redis.

The shared database stays the one source of truth. Redis pub/sub only tells the other nodes that
something committed, at most once:

- an event with its recipients: a node hands it to its own subscribers. Events from other nodes can
  arrive late or out of order, so this bus says `delivers_in_order = False` and a subscriber reads
  the store for anything newer than what it has (see `hub.services.events`);
- a credential change (an agent's epoch, ended sessions): a node drops what it cached.

Pub/sub loses messages when a connection drops, when Redis restarts, or when a node dies between its
commit and its publish. So every `catch_up_seconds` each node also looks at the store: a cursor it
has not seen on the bus by then is read from the store and handed to its subscribers. While Redis is
unreachable that catch-up is how events arrive (a little late, never lost), and the credential cache
is re-read at each look, so a revocation still holds within one interval. After a reconnect the
cache is re-read once, since notices may have been missed meanwhile.
"""

import json
import logging
import secrets
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from protocol.events import Event
from storage.queries import events as event_queries
from storage.store import Store

from .bus import LocalEventBus, Subscription
from .config import Settings
from .services.credential_state import CredentialState
from .services.timeline import event_of

if TYPE_CHECKING:
    import coredis

log = logging.getLogger(__name__)

OUTBOX: Final = 4096
"""Notices waiting for Redis; when it is full a new notice is dropped, and the catch-up (events) and a
`reload` notice (credentials) make up for it."""
RECONNECT_SECONDS: Final = 0.5
PUBLISH_TIMEOUT_SECONDS: Final = 5.0
IDLE_PING_SECONDS: Final = 5.0
"""A silent subscription is checked with a PING this often, so a dead link is noticed."""
CATCH_UP_CHUNK: Final = 500


class RedisCluster:
    """The event bus of a node among several, and its link to the others. Run `run` before use."""

    delivers_in_order = False

    def __init__(self, settings: Settings, store: Store, credentials: CredentialState) -> None:
        self.node_id = secrets.token_hex(8)
        self._url = settings.redis_url
        self._channel = settings.redis_channel
        self._interval = settings.catch_up_seconds
        self._store = store
        self._credentials = credentials
        self._local = LocalEventBus(settings.event_buffer)
        self._outbox_in, self._outbox = anyio.create_memory_object_stream[bytes](OUTBOX)
        self._unsent: bytes | None = None
        """A notice taken from the outbox whose publish has not succeeded yet."""
        self._overflowed = False
        self._linked = False
        self._seen: set[int] = set()
        """Cursors handed to subscribers (from here or from Redis) above `_checked`."""
        self._checked = 0
        """Every cursor up to this one was seen on the bus or caught up from the store."""
        self._scope = anyio.CancelScope()
        credentials.tell_peers = self._tell_credentials

    @property
    def linked(self) -> bool:
        """True while this node is subscribed to the deployment's channel."""
        return self._linked

    # -- the EventBus interface ------------------------------------------------------------------

    def publish(self, events: Collection[tuple[Event, Collection[str]]]) -> None:
        self._hand_out(events)
        self._post({"events": [[event.model_dump(mode="json"), list(recipients)] for event, recipients in events]})

    def subscribe(self, agent_id: str) -> AbstractContextManager[Subscription]:
        return self._local.subscribe(agent_id)

    # -- running ---------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep the link to Redis and catch up from the store until `close`."""
        try:
            with self._scope:
                self._checked = await self._store.read(event_queries.head)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._keep_linked)
                    tg.start_soon(self._catch_up_forever)
                    task_status.started()
        finally:
            self._outbox_in.close()  # what is posted from now on is dropped (`_post`): nothing sends it
            self._outbox.close()

    def close(self) -> None:
        self._scope.cancel()

    async def _keep_linked(self) -> None:
        outage_reported = False  # one warning per outage, not one per retry
        while True:
            try:
                await self._link()
            except Exception as exc:  # any Redis failure: unlink, keep serving, try again
                if self._scope.cancel_called:
                    return  # closing: coredis may end a connection cancelled under it with an error of its own
                if self._linked or not outage_reported:
                    log.warning("the link to Redis is down (%s); catching up from the store every %ss",
                                _reason(exc), self._interval)
                    outage_reported = True
            finally:
                self._linked = False
            await anyio.sleep(RECONNECT_SECONDS)

    async def _link(self) -> None:
        """One connection's life: subscribe, publish the outbox, hand out what other nodes post."""
        import coredis  # here, not at the top: a hub without Redis starts without it (a third of a second)
        from coredis.retry import NoRetryPolicy

        async with (
            coredis.Redis.from_url(self._url, retry_policy=NoRetryPolicy()) as client,
            client.pubsub(channels=[self._channel], ignore_subscribe_messages=True, retry_policy=NoRetryPolicy(),
                          max_idle_seconds=IDLE_PING_SECONDS) as pubsub,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(self._publish_outbox, client)
            self._linked = True
            log.info("linked to Redis, channel %r, as node %s", self._channel, self.node_id)
            await self._credentials.reload()  # notices may have passed while unlinked
            async for message in pubsub:
                await self._receive(message["data"])
            await anyio.lowlevel.checkpoint()  # ended by our own cancellation (`close`): that, not an error
            raise ConnectionError("the subscription ended")

    async def _publish_outbox(self, client: "coredis.Redis[bytes]") -> None:
        while True:
            if self._unsent is None:
                self._unsent = await self._outbox.receive()
            with anyio.fail_after(PUBLISH_TIMEOUT_SECONDS):
                await client.publish(self._channel, self._unsent)
            self._unsent = None
            if self._overflowed:
                self._overflowed = False
                self._post({"reload": True})  # a credential notice may have been among the dropped ones

    async def _catch_up_forever(self) -> None:
        previous_head = self._checked
        while True:
            await anyio.sleep(self._interval)
            head = await self._store.read(event_queries.head)
            # Cursors up to the head of one interval ago had that long to come over the bus.
            await self._catch_up(previous_head)
            previous_head = head
            if not self._linked:
                await self._credentials.reload()

    async def _catch_up(self, upto: int) -> None:
        missed = [cursor for cursor in range(self._checked + 1, upto + 1) if cursor not in self._seen]
        self._seen = {cursor for cursor in self._seen if cursor > upto}
        self._checked = max(self._checked, upto)
        if not self._local.statistics().subscriptions:
            return  # nobody here to hand them to; a later subscriber replays from the store anyway
        for start in range(0, len(missed), CATCH_UP_CHUNK):
            chunk = missed[start : start + CATCH_UP_CHUNK]
            rows = await self._store.read(lambda conn, ids=chunk: event_queries.deliveries_of(conn, ids))
            self._local.publish(list(_with_recipients(rows)))

    # -- messages between nodes ------------------------------------------------------------------

    def _tell_credentials(self, agent_ids: Sequence[str], session_ids: Sequence[str]) -> None:
        self._post({"credentials": {"agents": list(agent_ids), "sessions": list(session_ids)}})

    def _post(self, notice: dict[str, Any]) -> None:
        try:
            self._outbox_in.send_nowait(json.dumps({"node": self.node_id, **notice}).encode())
        except anyio.WouldBlock:
            self._overflowed = True  # events are caught up from the store; credentials are reloaded
        except anyio.ClosedResourceError:
            pass  # shutting down

    async def _receive(self, data: bytes) -> None:
        try:
            notice = json.loads(data)
            if notice.get("node") == self.node_id:
                return
            if "events" in notice:
                self._hand_out([(Event.model_validate(event), recipients) for event, recipients in notice["events"]])
            if "credentials" in notice:
                self._credentials.apply(notice["credentials"]["agents"], notice["credentials"]["sessions"])
            if notice.get("reload"):
                await self._credentials.reload()
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed notice on channel %r", self._channel)

    def _hand_out(self, events: Collection[tuple[Event, Collection[str]]]) -> None:
        self._seen.update(event.cursor for event, _ in events if event.cursor > self._checked)
        self._local.publish(events)


def _with_recipients(rows: Sequence[Any]) -> Iterator[tuple[Event, list[str]]]:
    """Rows of (id, payload, agent_id), ordered by id, as events with their recipients."""
    current: tuple[Event, list[str]] | None = None
    for row in rows:
        if current is None or current[0].cursor != row["id"]:
            if current is not None:
                yield current
            current = (event_of(row), [])
        current[1].append(row["agent_id"])
    if current is not None:
        yield current


def _reason(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _reason(exc.exceptions[0])
    return str(exc) or type(exc).__name__
