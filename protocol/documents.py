"""Models of the document store: documents ingested into passages an agent (or a conversation) searches,
with citations.

Each agent has a store, and so has each conversation (its members search it; its owners and admins,
and whoever added a document, manage it). A document comes from an uploaded file or from text given
directly; ingestion (extracting the text, cutting it into passages, indexing them) runs in the
background, reports progress live, and ends `ready` or `failed` with a reason.
"""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final, Self

from pydantic import Field, model_validator

from .common import DEFAULT_PAGE_SIZE, Cursor, FieldError, Model, PageLimit
from .files import FileId
from .memories import SearchMode
from .messages import ConversationId

DEFAULT_SEARCH_LIMIT: Final = 8
MAX_SEARCH_LIMIT: Final = 50
MAX_SEARCH_DEPTH: Final = 200
"""How deep `offset` + `limit` may page into one ranking."""
MAX_TEXT_CHARS: Final = 5 * 1024 * 1024
MAX_TITLE: Final = 256
MAX_DOCUMENT_IDS: Final = 100

DocumentId = Annotated[str, Field(min_length=1, max_length=64, description="A document id (`doc_…`).")]
Title = Annotated[str, Field(min_length=1, max_length=MAX_TITLE)]


class DocumentState(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class Document(Model):
    document_id: str
    title: str
    conversation_id: str | None = Field(description="The conversation whose store holds it; null: yours.")
    added_by: str
    file_id: str | None = Field(description="The file it was made from; null for text given directly.")
    media_type: str
    size: int = Field(description="Bytes of the source.")
    state: DocumentState
    error: str | None = Field(description="Why ingestion failed.")
    excluded: bool = Field(description="Kept, but left out of searches.")
    pages: int | None
    passages: int
    created_at: datetime
    updated_at: datetime


class AddDocumentParams(Model):
    """Give `text` (with a `title`) or the `file_id` of a file you can read (its name is the default title)."""

    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)] | None = None
    file_id: FileId | None = None
    title: Title | None = None
    conversation_id: ConversationId | None = Field(default=None, description="Add it to this conversation's store.")
    media_type: Annotated[str, Field(pattern=r"^text/(plain|markdown|html)$")] | None = Field(
        default=None, description="How to read `text`: text/plain (default), text/markdown or text/html.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.text is None) == (self.file_id is None):
            raise ValueError("give text or file_id, one of them")
        if self.text is not None and self.title is None:
            raise FieldError("title", "a document from text needs a title")
        if self.file_id is not None and self.media_type is not None:
            raise FieldError("media_type", "media_type describes text; a file's type is sniffed from its bytes")
        return self


class GetDocumentParams(Model):
    document_id: DocumentId


MAX_TEXT_SHOWN: Final = 1_000_000


class DocumentText(Model):
    document: Document
    text: str = Field(description="The text the passages were cut from (its first million characters).")
    truncated: bool


class ListDocumentsParams(Model):
    conversation_id: ConversationId | None = None
    state: DocumentState | None = None
    cursor: Cursor | None = None
    limit: PageLimit = DEFAULT_PAGE_SIZE


class DocumentPage(Model):
    items: list[Document]
    next_cursor: str | None


class SearchDocumentsParams(Model):
    query: Annotated[str, Field(min_length=1, max_length=1024)]
    limit: Annotated[int, Field(ge=1, le=MAX_SEARCH_LIMIT)] = DEFAULT_SEARCH_LIMIT
    offset: Annotated[int, Field(ge=0, le=MAX_SEARCH_DEPTH - MAX_SEARCH_LIMIT)] = Field(
        default=0, description="Hits to skip: the next page of the same ranking.")
    conversation_id: ConversationId | None = Field(
        default=None, description="Also search this conversation's store (yours always).")
    document_ids: Annotated[list[DocumentId], Field(max_length=MAX_DOCUMENT_IDS)] | None = Field(
        default=None, description="Only these documents.")
    mode: SearchMode = SearchMode.HYBRID
    group_by_document: bool = Field(default=False, description="Each document once, with its best passages.")


class Citation(Model):
    document_id: str
    title: str
    page: int | None = Field(description="1-based, for paged formats (PDF).")
    start: int = Field(description="Character offset of the passage in the document's text.")
    end: int
    passage_index: int


class Passage(Model):
    text: str
    score: float
    citation: Citation


class DocumentHit(Model):
    """A passage (or, with `group_by_document`, a document and its best passages)."""

    document_id: str
    title: str
    score: float
    passages: list[Passage]


class DocumentSearchResult(Model):
    items: list[DocumentHit]
    mode: SearchMode


class StoreStatusParams(Model):
    conversation_id: ConversationId | None = Field(default=None, description="That conversation's store; else yours.")


class StoreState(StrEnum):
    IDLE = "idle"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


class StoreStatus(Model):
    """Where the store's latest round of ingestion stands (a round: documents added while one was running)."""

    state: StoreState
    percent: float
    processed: int
    total: int
    failed: int
    current_document_id: str | None
    current_title: str | None
    eta_seconds: float | None = Field(description="From the rate measured in this round; null until one is done.")
    started_at: datetime | None


class AuditAction(StrEnum):
    INGEST_STARTED = "ingest_started"
    INGEST_COMPLETED = "ingest_completed"
    INGEST_FAILED = "ingest_failed"
    EXCLUDED = "excluded"
    INCLUDED = "included"
    DELETED = "deleted"


class AuditEntry(Model):
    audit_id: int
    document_id: str
    action: AuditAction
    actor_id: str | None = Field(description="Null for what the hub did itself (ingestion).")
    at: datetime
    details: dict[str, object]


class AuditParams(Model):
    conversation_id: ConversationId | None = None
    document_id: DocumentId | None = None
    cursor: Cursor | None = None
    limit: PageLimit = DEFAULT_PAGE_SIZE


class AuditPage(Model):
    items: list[AuditEntry] = Field(description="Newest first.")
    next_cursor: str | None


class DeletedDocument(Model):
    document_id: str
    deleted: bool = True


class StoreSummary(Model):
    documents: int
    ready: int
    excluded: int
    failed: int
    in_progress: int
    passages: int
    embedded: int = Field(description="Passages ready for search by meaning (0 without the embedding model).")
    bytes: int
    quota_bytes: int = Field(description="What your files and documents may hold in all.")
    bytes_used: int = Field(description="What your files and documents hold now, in every store.")
