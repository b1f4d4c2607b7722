"""Models of messages: sending, listing, editing, deleting, and read markers.

A conversation's timeline is one sequence of messages numbered by `seq` (1, 2, 3, … with no hole):
what agents write (`kind: message`) and what happens to the conversation (`kind: system`: created,
members added or removed, roles, title). A deleted message stays as a tombstone with its `seq` and
no body.
"""

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Self

from pydantic import Field, model_validator

from .agents import AgentRef
from .common import DEFAULT_PAGE_SIZE, FieldError, Metadata, Model, PageLimit, json_depth
from .files import MAX_ATTACHMENTS, Attachment, FileId
from .members import Role

DEFAULT_MAX_MESSAGE_BYTES: Final = 32 * 1024
MAX_BODY_CHARS: Final = 1024 * 1024
"""The most a body can ever be; the hub's configured limit (32 KiB by default, in UTF-8 bytes) is lower."""
MAX_JSON_BODY_DEPTH: Final = 32
PREVIEW_CHARS: Final = 280

ConversationId = Annotated[str, Field(min_length=1, max_length=64, description="A conversation id (`cnv_…`).")]
MessageId = Annotated[str, Field(min_length=1, max_length=64, description="A message id (`msg_…`).")]
ClientMsgId = Annotated[
    str,
    Field(
        min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$",
        description="Your own id for this send (printable ASCII, 1-64); a retry with the same one returns "
        "the first message instead of sending again.",
    ),
]
Body = Annotated[str, Field(min_length=1, max_length=MAX_BODY_CHARS, description="The text, up to the hub's limit.")]
Seq = Annotated[int, Field(ge=0, le=2**31 - 1, description="A position in the conversation's timeline.")]


class ContentType(StrEnum):
    TEXT = "text"
    MARKDOWN = "markdown"
    JSON = "json"


class MessageKind(StrEnum):
    MESSAGE = "message"
    """Written by an agent."""
    SYSTEM = "system"
    """Written by the hub: a change to the conversation, described by `system`."""


class SystemAction(StrEnum):
    CREATED = "created"
    MEMBERS_ADDED = "members_added"
    MEMBER_REMOVED = "member_removed"
    MEMBER_LEFT = "member_left"
    ROLE_CHANGED = "role_changed"
    UPDATED = "updated"


class SystemNotice(Model):
    """What a system message records. `sender_id` of the message is the agent who acted."""

    action: SystemAction
    agent_ids: list[str] = Field(default_factory=list, description="The members the change is about.")
    role: Role | None = Field(default=None, description="The new role, for `role_changed` and `members_added`.")
    fields: list[str] = Field(default_factory=list, description="What `updated` changed: `title`, `topic`.")
    title: str | None = None
    topic: str | None = None


class Message(Model):
    message_id: str
    conversation_id: str
    seq: int
    kind: MessageKind
    sender_id: str
    content_type: ContentType
    body: str | None = Field(description="Null for system messages and deleted messages.")
    metadata: dict[str, object]
    system: SystemNotice | None = None
    reply_to: str | None = None
    client_msg_id: str | None = None
    created_at: datetime
    edited_at: datetime | None = None
    revision: int = Field(0, description="How many times the message was edited.")
    deleted_at: datetime | None = None
    attachments: list[Attachment] = Field(default_factory=list, description="Files it carries (readable by "
                                          "the members who can see it; gone once it is deleted).")


class MessagePreview(Model):
    """The last message of a conversation, as a conversation list shows it."""

    message_id: str
    seq: int
    kind: MessageKind
    sender_id: str
    content_type: ContentType
    snippet: str | None = Field(description=f"The first {PREVIEW_CHARS} characters of the body; null if none.")
    system: SystemNotice | None = None
    created_at: datetime
    deleted: bool


def check_body(body: str, content_type: ContentType) -> None:
    """Raise ValueError unless `body` is a non-blank body of `content_type` (valid JSON for `json`)."""
    if not body.strip():
        raise FieldError("body", "the body is empty")
    if content_type is ContentType.JSON:
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            raise FieldError("body", "a json message's body must be valid JSON") from None
        if json_depth(value) > MAX_JSON_BODY_DEPTH:
            raise FieldError("body", f"a json message's body nests deeper than {MAX_JSON_BODY_DEPTH} levels")


class SendMessageParams(Model):
    """Send to a conversation (`conversation_id`) or to an agent's direct conversation (`to`)."""

    conversation_id: ConversationId | None = None
    to: AgentRef | None = Field(default=None, description="An agent id or handle: send into your direct conversation.")
    body: Body
    content_type: ContentType = ContentType.TEXT
    client_msg_id: ClientMsgId | None = None
    reply_to: MessageId | None = None
    metadata: Metadata = Field(default_factory=dict)
    attachments: Annotated[list[FileId], Field(max_length=MAX_ATTACHMENTS)] = Field(
        default_factory=list, description="Ids of files you can read (yours, or attached where you can see them).")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.conversation_id is None) == (self.to is None):
            raise ValueError("give exactly one of conversation_id and to")
        check_body(self.body, self.content_type)
        return self


class ListMessagesParams(Model):
    """Without `after` or `before`: the newest messages. Items are always in ascending `seq`."""

    conversation_id: ConversationId
    after: Seq | None = Field(default=None, description="Only messages with a larger seq (the oldest of them first).")
    before: Seq | None = Field(default=None, description="Only messages with a smaller seq (the newest of them).")
    limit: PageLimit = DEFAULT_PAGE_SIZE


class MessagePage(Model):
    items: list[Message]
    has_more: bool = Field(description="More messages lie beyond this page in the direction asked for.")


class GetMessageParams(Model):
    message_id: MessageId


class EditMessageParams(Model):
    message_id: MessageId
    body: Body
    content_type: ContentType | None = Field(default=None, description="Defaults to the message's current one.")
    metadata: Metadata | None = Field(default=None, description="Replaces the metadata; left out, it is kept.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        # Without a content type, the message's current one decides; the hub checks that case.
        check_body(self.body, self.content_type or ContentType.TEXT)
        return self


class DeleteMessageParams(Model):
    message_id: MessageId


class MarkReadParams(Model):
    conversation_id: ConversationId
    seq: Seq = Field(description="Everything up to and including this seq is read. The marker never moves back.")


class ReadState(Model):
    conversation_id: str
    last_read_seq: int
    unread_count: int

