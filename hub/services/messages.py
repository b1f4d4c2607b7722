"""Messages: send (idempotent per sender and `client_msg_id`), list, get, edit, delete, read markers.

- Send: members only; into a direct conversation only if the other agent does not block the sender.
  The same sender and `client_msg_id` in the same conversation returns the first message; a retry
  that asks for something else (body, content type, metadata, reply_to, attachments) is a `conflict`,
  as Stripe answers an `Idempotency-Key` reused with other parameters.
- Edit: the sender only; keeps `edited_at` and a revision count.
- Delete: the sender, or a group's owner or admin. Irreversible: the body and metadata are erased
  from the message row and from every event that carried them (and, on SQLite, from the WAL); the
  row stays as a tombstone so the timeline keeps its `seq`.
"""

import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from protocol import ids
from protocol.conversations import ConversationKind
from protocol.errors import Blocked, Conflict, Forbidden, InvalidRequest, NotFound, PayloadTooLarge
from protocol.events import EventType
from protocol.files import Attachment
from protocol.members import ReadMarker, Role
from protocol.messages import (
    ContentType,
    DeleteMessageParams,
    EditMessageParams,
    ListMessagesParams,
    MarkReadParams,
    Message,
    MessageKind,
    MessagePage,
    ReadState,
    SendMessageParams,
    check_body,
)
from protocol.usage import LimitName
from storage.queries import blocks as block_queries
from storage.queries import conversations as conversation_queries
from storage.queries import files as file_queries
from storage.queries import messages as message_queries
from storage.queries import workflows as workflow_queries
from storage.store import Store

from ..bus import EventBus
from ..clock import Clock
from ..config import Settings
from ..jobs import JobRunner
from ..usage import UsageMeter
from ..workflows import ADVANCE_JOB
from .conversations import open_direct_txn, resolve_agent
from .files import readable_file
from .message_views import MessageViews
from .timeline import (
    Delivery,
    append,
    can_see,
    emit,
    emit_new_message,
    erase_from_events,
    members_as_of,
    recipients,
    require_current_member,
    require_member,
    write_and_publish,
)
from .views import message_of, messages_of


def _message_not_found(message_id: str) -> NotFound:
    return NotFound(f"no message {message_id!r}", {"message_id": message_id})


def visible_message(conn: Connection, message_id: str, agent_id: str) -> tuple[RowMapping, RowMapping, RowMapping]:
    """A message the agent may see, with its conversation and the agent's membership.

    Raises:
        NotFound: no such message, or the agent may not see it (the same error either way).
    """
    message = message_queries.get_message(conn, message_id)
    if message is None:
        raise _message_not_found(message_id)
    member = conversation_queries.get_member(conn, message["conversation_id"], agent_id)
    if member is None or member["left_at"] is not None:
        raise _message_not_found(message_id)
    sender_id = message["sender_id"]
    blocked_sender = sender_id is not None and block_queries.blocks_agent(conn, agent_id, sender_id)
    if not can_see(member, message, blocked_sender):
        raise _message_not_found(message_id)
    conversation = conversation_queries.get_conversation(conn, message["conversation_id"])
    assert conversation is not None
    return conversation, member, message


def _check_not_blocked_by_peer(kind: str, blocked_by_other_member: Callable[[], bool]) -> None:
    """Raises Blocked when the conversation is direct and the other agent blocks the sender (only then is
    `blocked_by_other_member` asked)."""
    if kind == ConversationKind.DIRECT and blocked_by_other_member():
        raise Blocked("the other agent does not accept messages from you")


def _fingerprint(params: SendMessageParams) -> str:
    """What a send asks for, as a SHA-256: equal for a true retry, different for another message."""
    asked = {"body": params.body, "content_type": params.content_type.value, "metadata": params.metadata,
             "reply_to": params.reply_to, "attachments": list(dict.fromkeys(params.attachments))}
    return hashlib.sha256(json.dumps(asked, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _check_same_request(first: RowMapping, request_hash: str | None) -> None:
    """Raises Conflict when a `client_msg_id` already named a message that asked for something else.

    A message sent before fingerprints were kept, or since deleted, has none: its key answers as before.
    """
    if first["request_hash"] is not None and first["request_hash"] != request_hash:
        raise Conflict("this client_msg_id (over REST, the Idempotency-Key) was already used for a different "
                       "message; use a new one for a new message",
                       {"field": "client_msg_id", "message_id": first["id"]})


class MessageService:
    def __init__(self, store: Store, clock: Clock, settings: Settings, bus: EventBus, jobs: JobRunner,
                 usage: UsageMeter) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._bus = bus
        self._jobs = jobs
        self._usage = usage
        self.views = MessageViews(settings.message_cache_bytes)

    def _check_size(self, body: str) -> None:
        limit = self._settings.max_message_bytes
        if len(body.encode()) > limit:
            raise PayloadTooLarge(f"a message body is limited to {limit} bytes", {"field": "body", "max_bytes": limit})

    async def send(self, caller_id: str, params: SendMessageParams) -> Message:
        self._check_size(params.body)
        now = self._clock.now()
        message_id = ids.new_id(ids.MESSAGE)
        request_hash = _fingerprint(params) if params.client_msg_id is not None else None
        woke_workflows = False

        def write(conn: Connection) -> tuple[Message, list[Delivery]]:
            nonlocal woke_workflows
            deliveries: list[Delivery] = []
            if params.to is not None:
                conversation, deliveries = open_direct_txn(conn, caller_id, resolve_agent(conn, params.to), now)
                conversation_id = conversation["id"]
            else:
                assert params.conversation_id is not None
                conversation_id = params.conversation_id
            kind, joined_seq, blocked_by_peer = require_current_member(conn, conversation_id, caller_id)
            if params.client_msg_id is not None:
                first = message_queries.find_by_client_msg_id(conn, conversation_id, caller_id, params.client_msg_id)
                if first is not None:
                    _check_same_request(first, request_hash)
                    return message_of(first), deliveries
            sending.check()  # a new message: within the sender's daily limit, or nothing is written
            _check_not_blocked_by_peer(kind, lambda: blocked_by_peer)
            if params.reply_to is not None:
                self._check_reply_to(conn, params.reply_to, conversation_id, joined_seq)
            message = append(
                conn, conversation_id, sender_id=caller_id, now=now, content_type=params.content_type,
                body=params.body, metadata=params.metadata, reply_to=params.reply_to,
                client_msg_id=params.client_msg_id, message_id=message_id,
                attachments=self._attachments(conn, caller_id, params.attachments, now), request_hash=request_hash,
            )
            delivery, waiting = emit_new_message(conn, message, now=now)
            deliveries.append(delivery)
            # A workflow's `ask` waiting for this reply runs now (in this transaction: no wake-up is lost).
            if waiting:
                workflow_queries.wake(conn, waiting, ADVANCE_JOB, now)
            woke_workflows = bool(waiting)
            return message, deliveries

        with await self._usage.reserve(caller_id, LimitName.MESSAGES_PER_DAY) as sending:
            try:
                sent = await write_and_publish(self._store, self._bus, write)
            except IntegrityError:
                # A concurrent send with the same client_msg_id (or a new direct conversation) won the
                # race on another node; running again finds what it wrote.
                sent = await write_and_publish(self._store, self._bus, write)
        if sent.message_id == message_id:
            self._usage.kept_messages(caller_id, 1, len(params.body.encode()))
        else:  # a retry: its first send was counted
            sending.release()
        if woke_workflows:
            self._jobs.notify(ADVANCE_JOB)
        return sent

    def _attachments(self, conn: Connection, caller_id: str, file_ids: list[str], now: datetime) -> list[Attachment]:
        """The files a message is to carry, each one the sender may read.

        Raises:
            InvalidRequest: more than the hub allows.
            NotFound: a file the sender may not read (or that does not exist).
        """
        limit = self._settings.max_attachments
        if len(file_ids) > limit:
            raise InvalidRequest(f"a message carries at most {limit} files", {"field": "attachments", "max": limit})
        attachments = []
        for file_id in dict.fromkeys(file_ids):
            row = readable_file(conn, file_id, caller_id, now)
            attachments.append(Attachment(file_id=row["id"], name=row["name"], size=row["size"],
                                          media_type=row["media_type"]))
        return attachments

    @staticmethod
    def _check_reply_to(conn: Connection, reply_to: str, conversation_id: str, joined_seq: int) -> None:
        target = message_queries.get_message(conn, reply_to)
        if target is None or target["conversation_id"] != conversation_id or target["seq"] < joined_seq:
            raise InvalidRequest("reply_to must name a message of this conversation you can see",
                                 {"field": "reply_to"})

    async def list_messages(self, caller_id: str, params: ListMessagesParams) -> MessagePage:
        def read(conn: Connection) -> MessagePage:
            _, joined_seq, _ = require_current_member(conn, params.conversation_id, caller_id)
            versions = message_queries.list_message_versions(
                conn, params.conversation_id, from_seq=joined_seq, after=params.after,
                before=params.before, limit=params.limit + 1, hide_blocked_for=caller_id,
            )
            more = len(versions) > params.limit
            if more:  # the extra row lies beyond the page, at the end it extends from
                versions = versions[: params.limit] if params.after is not None else versions[1:]
            return MessagePage.model_construct(items=self._views_of(conn, params.conversation_id, versions),
                                                has_more=more)

        return await self._store.read(read, bounded=True)

    def _views_of(self, conn: Connection, conversation_id: str, page: Sequence[tuple[str, int, int]]) -> list[Message]:
        """The messages of a page of (id, seq, version), in order: the views kept, and the others built from
        their rows (and kept)."""
        views = self.views.get([(message_id, version) for message_id, _, version in page])
        missing = {message_id: seq for (message_id, seq, _), view in zip(page, views, strict=True) if view is None}
        if not missing:
            return views  # type: ignore[return-value]
        rows = self._rows_of(conn, conversation_id, missing)
        built = {message.message_id: message for message in messages_of(rows)}
        self.views.keep((row["version"], built[row["id"]]) for row in rows)
        # A message not found again went with its conversation meanwhile (on PostgreSQL each statement reads
        # its own snapshot): it is left out, as a read a moment later would leave it out.
        return [view or built[message_id] for (message_id, _, _), view in zip(page, views, strict=True)
                if view is not None or message_id in built]

    @staticmethod
    def _rows_of(conn: Connection, conversation_id: str, seqs: dict[str, int]) -> Sequence[RowMapping]:
        """The rows of the messages `seqs` names (id to seq).

        Those to build are most often a run of seqs (the newest messages, a page not read before), read
        as a range. Scattered ones are read by id: a range across a blocked sender's thousand messages
        would read them all.
        """
        first, last = min(seqs.values()), max(seqs.values())
        if last - first + 1 == len(seqs):  # every seq of the range is one of them
            return message_queries.messages_between(conn, conversation_id, first, last)
        if last - first < 2 * len(seqs):
            return [row for row in message_queries.messages_between(conn, conversation_id, first, last)
                    if row["id"] in seqs]
        return message_queries.messages_by_id(conn, list(seqs))

    async def get(self, caller_id: str, message_id: str) -> Message:
        return await self._store.read(lambda conn: message_of(visible_message(conn, message_id, caller_id)[2]),
                                      bounded=True)

    async def edit(self, caller_id: str, params: EditMessageParams) -> Message:
        self._check_size(params.body)
        now = self._clock.now()
        grown = 0

        def write(conn: Connection) -> tuple[Message, list[Delivery]]:
            nonlocal grown
            conversation, _, row = visible_message(conn, params.message_id, caller_id)
            if row["kind"] != MessageKind.MESSAGE or row["sender_id"] != caller_id:
                raise Forbidden("only its sender may edit a message")
            if row["deleted_at"] is not None:
                raise Conflict("the message was deleted", {"message_id": params.message_id})
            _check_not_blocked_by_peer(conversation["kind"], lambda: block_queries.blocked_by_other_member(
                conn, conversation["id"], caller_id))
            content_type = params.content_type or ContentType(row["content_type"])
            try:
                check_body(params.body, content_type)
            except ValueError as error:
                raise InvalidRequest(str(error), {"field": "body"}) from None
            changes = {"body": params.body, "content_type": content_type.value, "edited_at": now,
                       "revision": row["revision"] + 1}
            grown = len(params.body.encode()) - len(row["body"].encode())
            if params.metadata is not None:
                changes["metadata"] = params.metadata
            message_queries.update_message(conn, params.message_id, changes)
            message = message_of({**row, **changes})  # type: ignore[arg-type]
            return message, [emit(conn, EventType.MESSAGE_EDITED, conversation["id"], actor_id=caller_id, now=now,
                                  to=members_as_of(message, caller_id), message=message)]

        edited = await write_and_publish(self._store, self._bus, write)
        self._usage.kept_messages(caller_id, 0, grown)
        return edited

    async def delete(self, caller_id: str, params: DeleteMessageParams) -> Message:
        now = self._clock.now()
        freed: tuple[str, int] = ("", 0)  # the sender, and the bytes its message kept

        def write(conn: Connection) -> tuple[tuple[Message, bool], list[Delivery]]:
            nonlocal freed
            conversation, member, row = visible_message(conn, params.message_id, caller_id)
            if row["kind"] != MessageKind.MESSAGE:
                raise Forbidden("system messages cannot be deleted")
            moderator = conversation["kind"] == ConversationKind.GROUP and member["role"] in (Role.OWNER, Role.ADMIN)
            if row["sender_id"] != caller_id and not moderator:
                raise Forbidden("only its sender or a group's owner or admin may delete a message")
            if row["deleted_at"] is not None:
                return (message_of(row), False), []
            freed = (row["sender_id"], len(row["body"].encode()))
            changes = {"body": None, "metadata": None, "deleted_at": now, "attachments": None, "request_hash": None}
            message_queries.update_message(conn, params.message_id, changes)
            file_queries.detach_all(conn, params.message_id)
            tombstone = message_of({**row, **changes})  # type: ignore[arg-type]
            erase_from_events(conn, tombstone.message_id, "message", tombstone.model_dump(mode="json"))
            return (tombstone, True), [emit(conn, EventType.MESSAGE_DELETED, conversation["id"], actor_id=caller_id,
                                            now=now, to=members_as_of(tombstone, row["sender_id"]), message=tombstone)]

        tombstone, erased = await write_and_publish(self._store, self._bus, write)
        if erased:
            self._usage.kept_messages(freed[0], -1, -freed[1])
            # Before answering, so a caller that got the answer knows the bytes are gone (on SQLite, unless
            # another process reads the file right then: they are gone as soon as it lets go).
            await self._store.finish_erasure()
        return tombstone

    async def mark_read(self, caller_id: str, params: MarkReadParams) -> ReadState:
        now = self._clock.now()
        conversation_id = params.conversation_id

        def write(conn: Connection) -> tuple[ReadState, list[Delivery]]:
            conversation, _ = require_member(conn, conversation_id, caller_id)
            if params.seq > conversation["last_seq"]:
                raise InvalidRequest(f"seq {params.seq} is beyond the newest message ({conversation['last_seq']})",
                                     {"field": "seq", "last_seq": conversation["last_seq"]})
            deliveries: list[Delivery] = []
            if conversation_queries.advance_read_marker(conn, conversation_id, caller_id, params.seq):
                last_read_seq = params.seq
                deliveries.append(
                    emit(conn, EventType.READ_UPDATED, conversation_id, actor_id=caller_id, now=now,
                         to=recipients(conn, conversation_id),
                         read=ReadMarker(agent_id=caller_id, last_read_seq=params.seq))
                )
            else:  # at or beyond `seq` already; another node may have moved it since it was read above
                member = conversation_queries.get_member(conn, conversation_id, caller_id)
                assert member is not None
                last_read_seq = member["last_read_seq"]
            unread = 0 if block_queries.find_conversation_block(conn, caller_id, conversation_id) else (
                message_queries.count_unread_of_member(conn, [conversation_id], reader_id=caller_id)[conversation_id]
            )
            return ReadState(conversation_id=conversation_id, last_read_seq=last_read_seq,
                             unread_count=unread), deliveries

        return await write_and_publish(self._store, self._bus, write)
