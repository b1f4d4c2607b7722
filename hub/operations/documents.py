"""Document store operations: add documents, watch them ingest, search them with citations, manage them."""

from protocol.documents import (
    AddDocumentParams,
    AuditPage,
    AuditParams,
    DeletedDocument,
    Document,
    DocumentPage,
    DocumentSearchResult,
    DocumentText,
    GetDocumentParams,
    ListDocumentsParams,
    SearchDocumentsParams,
    StoreStatus,
    StoreStatusParams,
    StoreSummary,
)
from protocol.identity import Scope

from ..principal import Principal
from ..ratelimit import RateClass
from ..services import Services
from .table import operation


@operation("documents.add", scope=Scope.DOCUMENTS_WRITE, rate=RateClass.WRITE, route=("POST", "/api/documents", 201))
async def add(services: Services, caller: Principal, params: AddDocumentParams) -> Document:
    """Add a document to your store, or a conversation's (`conversation_id`): from `text` (with a `title`)
    or from a file you can read (`file_id`).

    It is ingested in the background (plain text, Markdown, HTML, PDF, DOCX): `documents.status` and the
    `documents.progress` events follow it until it is `ready` or `failed` (with the reason).
    """
    assert caller.agent_id is not None
    return await services.documents.add(caller.agent_id, params)


@operation("documents.get", scope=Scope.DOCUMENTS_READ, rate=RateClass.READ,
           route=("GET", "/api/documents/{document_id}"), read_only=True)
async def get(services: Services, caller: Principal, params: GetDocumentParams) -> Document:
    """One document you can see: its state, passages, pages, and why it failed if it did."""
    assert caller.agent_id is not None
    return await services.documents.get(caller.agent_id, params.document_id)


@operation("documents.text", scope=Scope.DOCUMENTS_READ, rate=RateClass.READ,
           route=("GET", "/api/documents/{document_id}/text"), read_only=True)
async def text(services: Services, caller: Principal, params: GetDocumentParams) -> DocumentText:
    """A document's text as ingested (put back together from its passages; the first million characters)."""
    assert caller.agent_id is not None
    return await services.documents.text(caller.agent_id, params.document_id)


@operation("documents.list", scope=Scope.DOCUMENTS_READ, rate=RateClass.READ, route=("GET", "/api/documents"),
           read_only=True)
async def list_documents(services: Services, caller: Principal, params: ListDocumentsParams) -> DocumentPage:
    """The documents of your store (or a conversation's), newest first, optionally of one state."""
    assert caller.agent_id is not None
    return await services.documents.list_documents(caller.agent_id, params)


@operation("documents.search", scope=Scope.DOCUMENTS_READ, rate=RateClass.READ,
           route=("GET", "/api/documents/search"), read_only=True)
async def search(services: Services, caller: Principal, params: SearchDocumentsParams) -> DocumentSearchResult:
    """The passages that best match a query, best first, each with a citation (document, title, page,
    character range, passage index).

    Searches your store, and a conversation's with `conversation_id`; `document_ids` narrows it.
    `group_by_document` gives each document once, with its best passages. Modes as for memory recall:
    `hybrid` (words and meaning; words alone without the embedding model), `lexical`, `semantic`.
    """
    assert caller.agent_id is not None
    return await services.documents.search(caller.agent_id, params)


@operation("documents.status", scope=Scope.DOCUMENTS_READ, rate=RateClass.READ, route=("GET", "/api/documents/status"),
           read_only=True)
async def status(services: Services, caller: Principal, params: StoreStatusParams) -> StoreStatus:
    """Where the store's ingestion stands: idle, in progress (percent, documents done of all, the current
    one, an ETA from the rate so far), completed or failed. The same is pushed live as `documents.progress`."""
    assert caller.agent_id is not None
    return await services.documents.status(caller.agent_id, params.conversation_id)


@operation("documents.audit", scope=Scope.DOCUMENTS_READ, rate=RateClass.READ, route=("GET", "/api/documents/audit"),
           read_only=True)
async def audit(services: Services, caller: Principal, params: AuditParams) -> AuditPage:
    """What happened in the store, newest first: ingestion started, completed, failed (with the error),
    excluded, included, deleted; by whom. Filter by `document_id`."""
    assert caller.agent_id is not None
    return await services.documents.audit(caller.agent_id, params)


@operation("documents.exclude", scope=Scope.DOCUMENTS_WRITE, rate=RateClass.WRITE,
           route=("POST", "/api/documents/{document_id}/exclude"), idempotent=True)
async def exclude(services: Services, caller: Principal, params: GetDocumentParams) -> Document:
    """Leave a document out of searches, keeping it (and its passages) until it is included again."""
    assert caller.agent_id is not None
    return await services.documents.set_excluded(caller.agent_id, params.document_id, True)


@operation("documents.include", scope=Scope.DOCUMENTS_WRITE, rate=RateClass.WRITE,
           route=("POST", "/api/documents/{document_id}/include"), idempotent=True)
async def include(services: Services, caller: Principal, params: GetDocumentParams) -> Document:
    """Search an excluded document again."""
    assert caller.agent_id is not None
    return await services.documents.set_excluded(caller.agent_id, params.document_id, False)


@operation("documents.reingest", scope=Scope.DOCUMENTS_WRITE, rate=RateClass.WRITE,
           route=("POST", "/api/documents/{document_id}/reingest"))
async def reingest(services: Services, caller: Principal, params: GetDocumentParams) -> Document:
    """Ingest a document again from its source (after a failure, or a newer hub): its passages are replaced."""
    assert caller.agent_id is not None
    return await services.documents.reingest(caller.agent_id, params.document_id)


@operation("documents.delete", scope=Scope.DOCUMENTS_WRITE, rate=RateClass.WRITE,
           route=("DELETE", "/api/documents/{document_id}"), destructive=True)
async def delete(services: Services, caller: Principal, params: GetDocumentParams) -> DeletedDocument:
    """Delete a document for good: its passages, their index entries and vectors, and its bytes once nothing
    else holds them. Whoever added it, or a group's owner or admin."""
    assert caller.agent_id is not None
    return await services.documents.delete(caller.agent_id, params.document_id)


@operation("documents.store", scope=Scope.DOCUMENTS_READ, rate=RateClass.READ, route=("GET", "/api/documents/store"),
           read_only=True)
async def store(services: Services, caller: Principal, params: StoreStatusParams) -> StoreSummary:
    """The store in numbers: documents ready, excluded, failed, in progress; passages; bytes; and what your
    files and documents hold against your quota."""
    assert caller.agent_id is not None
    return await services.documents.summary(caller.agent_id, params.conversation_id)
