"""The document store: documents in, passages with citations out.

Each agent has a store, and so has each conversation: its current members search it and add to it;
whoever added a document, and a group's owners and admins, exclude, include, re-ingest or delete it.
Anyone else gets `not_found`, as for a conversation they are not in. Documents added by an agent
the reader blocks are left out of its searches.

Adding a document queues its ingestion, a background job: the text is extracted, cut into passages
(`ingest.chunking`), and the passages are indexed by the retrieval component, in batches, each
written only while the job's lease holds. A job that runs again (the hub was killed, the lease
expired) starts by removing what an earlier run wrote, so passages are never duplicated. Progress is
kept per store as a round (the documents queued while one was running) and every step of it is an
event (`documents.progress`), live on every transport; `documents.status` reads the same. The audit
log records what happened to each document and who did it.

Deleting a document removes its passages, their index entries and vectors, its snapshot in every
event, and its bytes once nothing else refers to them.
"""

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import anyio
from sqlalchemy import Connection, RowMapping

from protocol import ids
from protocol.conversations import ConversationKind
from protocol.documents import (
    MAX_TEXT_SHOWN,
    AddDocumentParams,
    AuditAction,
    AuditEntry,
    AuditPage,
    AuditParams,
    Citation,
    DeletedDocument,
    Document,
    DocumentHit,
    DocumentPage,
    DocumentSearchResult,
    DocumentState,
    DocumentText,
    ListDocumentsParams,
    Passage,
    SearchDocumentsParams,
    StoreState,
    StoreStatus,
    StoreSummary,
)
from protocol.errors import Blocked, Conflict, Forbidden, NotFound
from protocol.events import EventType
from protocol.members import Role
from protocol.memories import MemoryScope
from storage.queries import blocks as block_queries
from storage.queries import conversations as conversation_queries
from storage.queries import documents as document_queries
from storage.queries import events as event_queries
from storage.queries import files as file_queries
from storage.queries import jobs as job_queries
from storage.queries import usage as usage_queries
from storage.store import Store

from ..bus import EventBus
from ..clock import Clock
from ..config import Settings
from ..ingest import chunking
from ..ingest.extract import Unreadable, extract
from ..jobs import Job, JobKind, JobRunner, Work
from ..media import TEXT
from ..retrieval.index import EMBED_JOB, SearchIndex, collection_key, index_items, unindex_item
from ..retrieval.text import Analyzed, analyze
from ..usage import storage_quota
from . import cursors
from .files import BytesUpload, check_storage_quota, digest, readable_file
from .scopes import reader_membership
from .timeline import Delivery, emit, erase_from_events, recipients, write_and_publish

CORPUS: Final = "documents"
INGEST_JOB: Final = "documents.ingest"
WRITE_BATCH: Final = 200
"""Passages indexed per transaction: a long document does not hold the writer for long."""
QUICK_BYTES: Final = 64 * 1024
"""A document this small is read, then written in one transaction; a larger one shows `processing` first."""
INGEST_BATCH: Final = 8
"""Documents claimed at once: the small ones among them are written in one transaction (a claim and a
commit per eight documents, not per one; 2,000 SciFact abstracts added one by one on SQLite: 15.2 ms
a document before, 12.9 ms after)."""
PASSAGES_PER_DOCUMENT: Final = 3
MANAGERS: Final = frozenset({Role.OWNER, Role.ADMIN})


_NO_ROUND: Final = {"round_total": 0, "round_done": 0, "round_failed": 0, "round_started_at": None,
                    "current_document_id": None}
"""A store's round before its first document (none: `documents.add` starts one)."""

Reading = tuple[list[tuple[chunking.Passage, Analyzed]], int | None, str | None]
"""A document as read: its passages with their terms, its page count (paged formats), why it failed."""


def _cut(data: bytes, media_type: str) -> Reading:
    """Extract, cut and analyze a document's bytes (CPU work: in a worker thread)."""
    try:
        extracted = extract(data, media_type)
        found = chunking.passages(extracted.pages, paged=extracted.paged)
        analyzed = [(passage, analyze(passage.text)) for passage in found]
    except Unreadable as unreadable:
        return [], None, str(unreadable)
    if not analyzed:
        return [], None, "the document has no text"
    return analyzed, (len(extracted.pages) if extracted.paged else None), None


def _not_found(document_id: str) -> NotFound:
    return NotFound(f"no document {document_id!r}", {"document_id": document_id})


def document_of(row: RowMapping | dict[str, Any]) -> Document:
    shared = row["scope"] == MemoryScope.CONVERSATION
    return Document(
        document_id=row["id"], title=row["title"], conversation_id=row["scope_id"] if shared else None,
        added_by=row["added_by"], file_id=row["file_id"], media_type=row["media_type"], size=row["size"],
        state=DocumentState(row["state"]), error=row["error"], excluded=row["excluded"], pages=row["pages"],
        passages=row["passages"], created_at=row["created_at"], updated_at=row["updated_at"],
    )


def status_of(round_row: Mapping[str, Any] | None, title_of_current: str | None, now: datetime) -> StoreStatus:
    """The round's state; its ETA is the rate of the round so far (wall time: several documents are
    ingested at once) applied to what is left."""
    if round_row is None or not round_row["round_total"]:
        return StoreStatus(state=StoreState.IDLE, percent=0.0, processed=0, total=0, failed=0,
                           current_document_id=None, current_title=None, eta_seconds=None, started_at=None)
    total, done, failed = round_row["round_total"], round_row["round_done"], round_row["round_failed"]
    if done < total:
        state = StoreState.IN_PROGRESS
    else:
        state = StoreState.FAILED if failed else StoreState.COMPLETED
    elapsed = (now - round_row["round_started_at"]).total_seconds()
    eta = elapsed / done * (total - done) if done and done < total else (0.0 if done else None)
    return StoreStatus(state=state, percent=round(100.0 * done / total, 1), processed=done, total=total,
                       failed=failed, current_document_id=round_row["current_document_id"],
                       current_title=title_of_current, eta_seconds=round(eta, 1) if eta is not None else None,
                       started_at=round_row["round_started_at"])


class DocumentService:
    def __init__(self, store: Store, clock: Clock, settings: Settings, bus: EventBus, index: SearchIndex,
                 jobs: JobRunner) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._bus = bus
        self._index = index
        self._jobs = jobs

    def ingest_job(self) -> JobKind:
        return JobKind(INGEST_JOB, self._ingest, batch=INGEST_BATCH, concurrency=self._settings.ingest_concurrency,
                       lease_seconds=120.0, max_attempts=3, given_up=self._given_up)

    # -- who may do what ------------------------------------------------------------------------

    @staticmethod
    def _store_of(conn: Connection, agent_id: str, conversation_id: str | None) -> tuple[str, RowMapping | None]:
        """The scope id of the store the agent names (its own, or a conversation's), and its membership.

        Raises:
            NotFound: the agent is not a current member of that conversation.
        """
        if conversation_id is None:
            return agent_id, None
        member = conversation_queries.get_member(conn, conversation_id, agent_id)
        if member is None or member["left_at"] is not None:
            raise NotFound(f"no conversation {conversation_id!r}", {"conversation_id": conversation_id})
        return conversation_id, member

    def _readable(self, conn: Connection, agent_id: str, document_id: str) -> tuple[RowMapping, RowMapping | None]:
        row = document_queries.get_document(conn, document_id)
        if row is None:
            raise _not_found(document_id)
        return row, reader_membership(conn, agent_id, row["scope"], row["scope_id"], row["added_by"],
                                      _not_found(document_id))

    def _manageable(self, conn: Connection, agent_id: str, document_id: str) -> RowMapping:
        """The document, if the agent may exclude, include, re-ingest or delete it.

        Raises:
            NotFound: as for reading it.
            Forbidden: it may read it, not manage it.
        """
        row, member = self._readable(conn, agent_id, document_id)
        if member is not None and row["added_by"] != agent_id:
            conversation = conversation_queries.get_conversation(conn, row["scope_id"])
            assert conversation is not None
            if conversation["kind"] != ConversationKind.GROUP or Role(member["role"]) not in MANAGERS:
                raise Forbidden("only whoever added a document, or a group's owner or admin, may change it")
        return row

    @staticmethod
    def _audience(conn: Connection, row: RowMapping | dict[str, Any]) -> list[str]:
        if row["scope"] == MemoryScope.AGENT:
            return [row["scope_id"]]
        return recipients(conn, row["scope_id"], sender_id=row["added_by"])

    def _progress(self, conn: Connection, row: RowMapping | dict[str, Any], actor_id: str, now: datetime,
                  round_row: Mapping[str, Any] | None = None) -> Delivery:
        """The `documents.progress` event: the document as it stands, and its store's round (read here unless
        the caller has it)."""
        if round_row is None:
            round_row = document_queries.store_round(conn, row["scope_id"])
        current = round_row["current_document_id"] if round_row else None
        current_title = document_queries.title_of(conn, current) if current is not None else None
        return self._progress_event(conn, row, self._audience(conn, row), round_row, current_title, now, actor_id)

    @staticmethod
    def _progress_event(conn: Connection, row: RowMapping | dict[str, Any], audience: list[str],
                        round_row: Mapping[str, Any] | None, current_title: str | None, now: datetime,
                        actor_id: str | None = None) -> Delivery:
        conversation_id = row["scope_id"] if row["scope"] == MemoryScope.CONVERSATION else None
        return emit(conn, EventType.DOCUMENTS_PROGRESS, conversation_id, actor_id=actor_id or row["added_by"],
                    now=now, to=audience, subject_id=row["id"], document=document_of(row),
                    progress=status_of(round_row, current_title, now))

    # -- adding ---------------------------------------------------------------------------------

    async def add(self, caller_id: str, params: AddDocumentParams) -> Document:
        now = self._clock.now()
        document_id = ids.new_id(ids.DOCUMENT)
        text_source = None
        if params.text is not None:
            text_source = BytesUpload(params.title or "text", params.text.encode())
            found = await anyio.to_thread.run_sync(digest, text_source)

        def write(conn: Connection) -> tuple[Document, list[Delivery]]:
            scope_id, member = self._store_of(conn, caller_id, params.conversation_id)
            if member is not None:
                conversation = conversation_queries.get_conversation(conn, scope_id)
                assert conversation is not None
                if conversation["kind"] == ConversationKind.DIRECT and \
                        block_queries.blocked_by_other_member(conn, scope_id, caller_id):
                    raise Blocked("the other agent does not accept anything from you")
            if text_source is not None:
                check_storage_quota(conn, self._settings, caller_id, found.size)
                file_queries.put_blob(conn, found.sha256, found.size,
                                      text_source.chunks(file_queries.CHUNK_BYTES), now)
                usage_queries.add_storage(conn, caller_id, usage_queries.DOCUMENTS, 1, found.size)
                source = {"file_id": None, "sha256": found.sha256, "size": found.size, "counts_bytes": True,
                          "media_type": params.media_type or TEXT, "title": params.title}
            else:
                assert params.file_id is not None
                file = readable_file(conn, params.file_id, caller_id, now)
                source = {"file_id": file["id"], "sha256": file["sha256"], "size": file["size"], "counts_bytes": False,
                          "media_type": file["media_type"], "title": params.title or file["name"]}
            row = {"id": document_id, "scope": (MemoryScope.CONVERSATION if member else MemoryScope.AGENT).value,
                   "scope_id": scope_id, "added_by": caller_id, **source, "state": DocumentState.QUEUED.value,
                   "error": None, "excluded": False, "pages": None, "passages": 0, "created_at": now,
                   "updated_at": now}
            document_queries.insert_document(conn, row)
            round_row = document_queries.round_added(conn, scope_id, 1, now)
            job_queries.ensure(conn, INGEST_JOB, document_id, {}, now, now)
            return document_of(row), [self._progress(conn, row, caller_id, now, round_row)]

        document = await write_and_publish(self._store, self._bus, write)
        self._jobs.notify(INGEST_JOB)
        return document

    # -- ingesting ------------------------------------------------------------------------------

    async def _ingest(self, work: Work) -> None:
        """Ingest a batch of documents. The small ones (`QUICK_BYTES`) are read, then written together in
        one transaction, each from `processing` to `ready`; a larger one is marked `processing` first (so
        its progress shows), then read, then written in batches."""
        wanted = [job.subject for job in work.jobs]
        rows = await self._store.read(lambda conn: document_queries.documents_by_id(conn, wanted))
        quick, large = [], []
        for job in work.jobs:  # a document deleted meanwhile is done at once, with the quick ones
            row = rows.get(job.subject)
            (large if row is not None and row["size"] > QUICK_BYTES else quick).append(job)
        read = await self._read([rows[job.subject] for job in quick if job.subject in rows])
        embed = self._index.semantic

        def finish(conn: Connection, held: list[Job]) -> list[Delivery]:
            return self._ingest_together(conn, [(job, rows[job.subject]) for job in held if job.subject in rows],
                                         read, embed)

        if quick:
            await work.complete(quick, finish, on_commit=self._bus.publish)
        for job in large:
            await self._ingest_large(work, job, rows[job.subject], embed)
        if embed and any(cut for cut, _, _ in read.values()):
            self._jobs.notify(EMBED_JOB)

    def _ingest_together(self, conn: Connection, documents: list[tuple[Job, RowMapping]], read: dict[str, Reading],
                         embed: bool) -> list[Delivery]:
        """Small documents, each taken from `processing` to its end in this one transaction: every step is
        still an event and an audit entry, but the rows are written a statement per kind for the batch."""
        now = self._clock.now()
        event_queries.serialize_appends(conn)
        self._remove_passages(conn, [row["id"] for _, row in documents])  # what an earlier, interrupted run wrote
        rounds: dict[str, dict[str, Any]] = {}
        ended_here: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # by store: documents done, failed
        audiences: dict[tuple[str, str], list[str]] = {}
        passages: dict[str, list[tuple[dict[str, Any], Analyzed]]] = defaultdict(list)
        changes: list[dict[str, Any]] = []
        audit: list[dict[str, Any]] = []
        deliveries: list[Delivery] = []
        for job, row in documents:
            scope_id = row["scope_id"]
            if scope_id not in rounds:
                rounds[scope_id] = dict(document_queries.store_round(conn, scope_id) or _NO_ROUND)
            round_row = rounds[scope_id]
            audience = audiences.get((scope_id, row["added_by"]))
            if audience is None:
                audience = audiences[scope_id, row["added_by"]] = self._audience(conn, row)
            cut, pages, error = read[row["id"]]
            passages[scope_id] += [(self._passage_row(row, passage), terms) for passage, terms in cut]
            audit.append({"scope_id": scope_id, "document_id": row["id"], "action": AuditAction.INGEST_STARTED.value,
                          "actor_id": None, "at": now, "details": {"attempt": job.attempts}})
            round_row["current_document_id"] = row["id"]
            processing = {**row, "state": DocumentState.PROCESSING.value, "error": None, "passages": 0,
                          "updated_at": now}
            deliveries.append(self._progress_event(conn, processing, audience, round_row, row["title"], now))
            ended = self._ended(row, error=error, pages=pages, count=len(cut), now=now)
            changes.append({"document_id": row["id"], **ended})
            audit.append(self._ended_audit(row, ended, now))
            ended_here[scope_id][0] += 1
            ended_here[scope_id][1] += int(error is not None)
            round_row.update(current_document_id=None, round_done=round_row["round_done"] + 1,
                             round_failed=round_row["round_failed"] + int(error is not None))
            deliveries.append(self._progress_event(conn, {**row, **ended}, audience, round_row, None, now))
        for scope_id, found in passages.items():
            self._index_passages(conn, scope_id, found, embed)
        document_queries.update_documents(conn, changes)
        for scope_id, (done, failed) in ended_here.items():
            document_queries.round_done(conn, scope_id, done=done, failed=failed)
        document_queries.audit_entries(conn, audit)
        return deliveries

    async def _ingest_large(self, work: Work, job: Job, row: RowMapping, embed: bool) -> None:
        await work.write(job, lambda conn: self._start(conn, job, row), on_commit=self._bus.publish)
        cut, pages, error = (await self._read([row]))[row["id"]]
        for first in range(0, len(cut), WRITE_BATCH):
            found = [(self._passage_row(row, passage), terms) for passage, terms in cut[first:first + WRITE_BATCH]]
            await work.write(job, lambda conn, found=found: self._index_passages(conn, row["scope_id"], found, embed))
        await work.complete([job], lambda conn, held: self._finish(conn, row, error=error, pages=pages, count=len(cut)),
                            on_commit=self._bus.publish)
        if embed and cut:
            self._jobs.notify(EMBED_JOB)

    async def _read(self, rows: list[RowMapping]) -> dict[str, Reading]:
        """Each document's passages with their terms, its page count (paged formats only), and why it could
        not be read, by document id: the bytes fetched in one read, then cut in one worker-thread call,
        before any write."""

        def fetch(conn: Connection) -> dict[str, bytes]:
            return {row["id"]: b"".join(file_queries.blob_chunks_for(
                conn, row["sha256"], 0, row["size"] // file_queries.CHUNK_BYTES)) for row in rows}

        if not rows:
            return {}
        data = await self._store.read(fetch)
        return await anyio.to_thread.run_sync(lambda: {row["id"]: _cut(data[row["id"]], row["media_type"])
                                                       for row in rows})

    def _start(self, conn: Connection, job: Job, row: RowMapping) -> list[Delivery]:
        now = self._clock.now()
        event_queries.serialize_appends(conn)
        self._remove_passages(conn, [row["id"]])  # what an earlier, interrupted run wrote
        document_queries.update_document(conn, row["id"], {"state": DocumentState.PROCESSING.value,
                                                           "error": None, "passages": 0, "updated_at": now})
        document_queries.round_working_on(conn, row["scope_id"], row["id"])
        document_queries.audit(conn, row["scope_id"], row["id"], AuditAction.INGEST_STARTED.value, None, now,
                               {"attempt": job.attempts})
        current = {**row, "state": DocumentState.PROCESSING.value, "error": None, "passages": 0, "updated_at": now}
        return [self._progress(conn, current, row["added_by"], now)]

    @staticmethod
    def _passage_row(document: RowMapping, passage: chunking.Passage) -> dict[str, Any]:
        return {"id": ids.new_id(ids.PASSAGE), "document_id": document["id"], "idx": passage.index,
                "page": passage.page, "start": passage.start, "end": passage.end, "text": passage.text}

    def _index_passages(self, conn: Connection, scope_id: str, passages: list[tuple[dict[str, Any], Analyzed]],
                        embed: bool) -> None:
        document_queries.insert_passages(conn, [row for row, _ in passages])
        index_items(conn, CORPUS, scope_id, [(row["id"], terms) for row, terms in passages], self._clock.now(),
                    embed=embed)

    @staticmethod
    def _ended(row: RowMapping, *, error: str | None, pages: int | None, count: int, now: datetime) -> dict[str, Any]:
        """A document's changes as its ingestion ends, `ready` or `failed` with why."""
        state = DocumentState.FAILED if error else DocumentState.READY
        return {"state": state.value, "error": error, "pages": pages, "passages": count, "updated_at": now}

    @staticmethod
    def _ended_audit(row: RowMapping, ended: dict[str, Any], now: datetime) -> dict[str, Any]:
        if ended["error"]:
            action, details = AuditAction.INGEST_FAILED, {"error": ended["error"]}
        else:
            action, details = AuditAction.INGEST_COMPLETED, {"passages": ended["passages"], "pages": ended["pages"]}
        return {"scope_id": row["scope_id"], "document_id": row["id"], "action": action.value, "actor_id": None,
                "at": now, "details": details}

    def _finish(self, conn: Connection, row: RowMapping, *, error: str | None, pages: int | None,
                count: int) -> list[Delivery]:
        now = self._clock.now()
        ended = self._ended(row, error=error, pages=pages, count=count, now=now)
        event_queries.serialize_appends(conn)
        document_queries.update_document(conn, row["id"], ended)
        document_queries.round_done(conn, row["scope_id"], done=1, failed=int(error is not None))
        document_queries.audit_entries(conn, [self._ended_audit(row, ended, now)])
        return [self._progress(conn, {**row, **ended}, row["added_by"], now)]

    def _given_up(self, conn: Connection, job: Job, reason: str) -> list[Delivery]:
        """The ingestion failed for a reason of the hub's, not the file's, every time: the document fails
        with it (re-ingesting tries again) rather than staying queued for ever."""
        row = document_queries.get_document(conn, job.subject)
        if row is None or row["state"] not in (DocumentState.QUEUED, DocumentState.PROCESSING):
            return []
        self._remove_passages(conn, [row["id"]])
        error = f"ingestion failed {job.attempts} times ({reason}); re-ingest it to try again"
        return self._finish(conn, row, error=error, pages=None, count=0)

    def _remove_passages(self, conn: Connection, document_ids: list[str]) -> None:
        for passage_id in document_queries.passage_ids_of(conn, document_ids):
            unindex_item(conn, passage_id)
        document_queries.delete_passages(conn, document_ids)

    # -- managing -------------------------------------------------------------------------------

    async def set_excluded(self, caller_id: str, document_id: str, excluded: bool) -> Document:
        now = self._clock.now()

        def write(conn: Connection) -> tuple[Document, list[Delivery]]:
            row = self._manageable(conn, caller_id, document_id)
            if row["excluded"] == excluded:
                return document_of(row), []
            document_queries.update_document(conn, document_id, {"excluded": excluded, "updated_at": now})
            action = AuditAction.EXCLUDED if excluded else AuditAction.INCLUDED
            document_queries.audit(conn, row["scope_id"], document_id, action.value, caller_id, now)
            updated = {**row, "excluded": excluded, "updated_at": now}
            return document_of(updated), [self._progress(conn, updated, caller_id, now)]

        return await write_and_publish(self._store, self._bus, write)

    async def reingest(self, caller_id: str, document_id: str) -> Document:
        now = self._clock.now()

        def write(conn: Connection) -> tuple[Document, list[Delivery]]:
            row = self._manageable(conn, caller_id, document_id)
            if row["state"] in (DocumentState.QUEUED, DocumentState.PROCESSING):
                raise Conflict("the document is being ingested already", {"state": row["state"]})
            document_queries.update_document(conn, document_id, {"state": DocumentState.QUEUED.value,
                                                                 "updated_at": now})
            round_row = document_queries.round_added(conn, row["scope_id"], 1, now)
            job_queries.ensure(conn, INGEST_JOB, document_id, {}, now, now)
            updated = {**row, "state": DocumentState.QUEUED.value, "updated_at": now}
            return document_of(updated), [self._progress(conn, updated, caller_id, now, round_row)]

        document = await write_and_publish(self._store, self._bus, write)
        self._jobs.notify(INGEST_JOB)
        return document

    async def delete(self, caller_id: str, document_id: str) -> DeletedDocument:
        now = self._clock.now()

        def write(conn: Connection) -> tuple[DeletedDocument, list[Delivery]]:
            row = self._manageable(conn, caller_id, document_id)
            audience = self._audience(conn, row)
            if row["state"] in (DocumentState.QUEUED, DocumentState.PROCESSING):
                document_queries.round_dropped(conn, row["scope_id"])
            job_queries.cancel(conn, INGEST_JOB, document_id)
            self._remove_passages(conn, [document_id])
            erase_from_events(conn, document_id, "document", None)
            document_queries.delete_document(conn, document_id)
            file_queries.drop_blob_if_unused(conn, row["sha256"])
            if row["counts_bytes"]:
                usage_queries.add_storage(conn, row["added_by"], usage_queries.DOCUMENTS, -1, -row["size"])
            document_queries.audit(conn, row["scope_id"], document_id, AuditAction.DELETED.value, caller_id, now)
            conversation_id = row["scope_id"] if row["scope"] == MemoryScope.CONVERSATION else None
            return DeletedDocument(document_id=document_id), [
                emit(conn, EventType.DOCUMENTS_PROGRESS, conversation_id, actor_id=caller_id, now=now, to=audience,
                     subject_id=document_id, progress=status_of(document_queries.store_round(conn, row["scope_id"]),
                                                                None, now))]

        deleted = await write_and_publish(self._store, self._bus, write)
        await self._store.finish_erasure()
        return deleted

    # -- reading --------------------------------------------------------------------------------

    async def get(self, caller_id: str, document_id: str) -> Document:
        return await self._store.read(lambda conn: document_of(self._readable(conn, caller_id, document_id)[0]))

    async def text(self, caller_id: str, document_id: str) -> DocumentText:
        """A document and its text, put back together from its passages."""

        def read(conn: Connection) -> DocumentText:
            row, _ = self._readable(conn, caller_id, document_id)
            parts: list[str] = []
            end = 0
            for passage in document_queries.passages_of_document(conn, document_id):
                if passage["start"] >= end:
                    parts.append(("\n\n" if parts else "") + passage["text"])
                else:  # overlapping the previous one: only what is new
                    parts.append(passage["text"][end - passage["start"]:])
                end = max(end, passage["end"])
            text = "".join(parts)
            return DocumentText(document=document_of(row), text=text[:MAX_TEXT_SHOWN],
                                truncated=len(text) > MAX_TEXT_SHOWN)

        return await self._store.read(read)

    async def list_documents(self, caller_id: str, params: ListDocumentsParams) -> DocumentPage:
        position = cursors.decode(params.cursor, str)

        def read(conn: Connection) -> DocumentPage:
            scope_id, _ = self._store_of(conn, caller_id, params.conversation_id)
            rows = document_queries.documents_of(conn, scope_id, caller_id,
                                                 state=params.state.value if params.state else None,
                                                 after_id=position[0] if position else None, limit=params.limit + 1)
            more = len(rows) > params.limit
            rows = rows[: params.limit]
            return DocumentPage(items=[document_of(row) for row in rows],
                                next_cursor=cursors.encode(rows[-1]["id"]) if more else None)

        return await self._store.read(read)

    async def status(self, caller_id: str, conversation_id: str | None) -> StoreStatus:
        def read(conn: Connection) -> StoreStatus:
            scope_id, _ = self._store_of(conn, caller_id, conversation_id)
            round_row = document_queries.store_round(conn, scope_id)
            current = round_row["current_document_id"] if round_row else None
            current_title = document_queries.title_of(conn, current) if current else None
            return status_of(round_row, current_title, self._clock.now())

        return await self._store.read(read)

    async def audit(self, caller_id: str, params: AuditParams) -> AuditPage:
        position = cursors.decode(params.cursor, int)

        def read(conn: Connection) -> AuditPage:
            scope_id, _ = self._store_of(conn, caller_id, params.conversation_id)
            rows = document_queries.audit_page(conn, scope_id, params.document_id,
                                               before=position[0] if position else None, limit=params.limit + 1)
            more = len(rows) > params.limit
            rows = rows[: params.limit]
            return AuditPage(items=[AuditEntry(audit_id=row["id"], document_id=row["document_id"],
                                               action=AuditAction(row["action"]), actor_id=row["actor_id"],
                                               at=row["at"], details=row["details"]) for row in rows],
                             next_cursor=cursors.encode(rows[-1]["id"]) if more else None)

        return await self._store.read(read)

    async def summary(self, caller_id: str, conversation_id: str | None) -> StoreSummary:
        embedder = self._index.embedder

        def read(conn: Connection) -> StoreSummary:
            scope_id, _ = self._store_of(conn, caller_id, conversation_id)
            counts = document_queries.summary(conn, [scope_id])
            used = sum(usage_queries.storage_used(conn, caller_id, kind)[1]
                       for kind in (usage_queries.FILES, usage_queries.DOCUMENTS))
            return StoreSummary(documents=counts["documents"], ready=counts["ready"], excluded=counts["excluded"],
                                failed=counts["failed"], in_progress=counts["in_progress"],
                                passages=counts["passages"], bytes=counts["bytes"],
                                embedded=document_queries.count_embedded(conn, [scope_id], embedder.model_id)
                                if embedder else 0,
                                quota_bytes=storage_quota(conn, self._settings, caller_id), bytes_used=used)

        return await self._store.read(read)

    async def search(self, caller_id: str, params: SearchDocumentsParams) -> DocumentSearchResult:
        mode = self._index.mode_for(params.mode)
        scopes = [caller_id]
        if params.conversation_id is not None:
            await self._store.read(lambda conn: self._store_of(conn, caller_id, params.conversation_id))
            scopes.append(params.conversation_id)
        collections = [collection_key(CORPUS, scope_id) for scope_id in scopes]
        depth = params.offset + params.limit
        wanted = depth * (PASSAGES_PER_DOCUMENT if params.group_by_document else 1)
        candidates = 2 * wanted + 10
        found: list[tuple[dict[str, Any], float]] = []
        for _ in range(3):
            ranked = await self._index.search(collections, params.query, mode, candidates)
            rows = await self._store.read(lambda conn: document_queries.searchable_passages(
                conn, [hit.item_id for hit in ranked], scopes, params.document_ids, caller_id))
            found = [(rows[hit.item_id], hit.score) for hit in ranked if hit.item_id in rows]
            if len(found) >= wanted or len(ranked) < candidates:
                break
            candidates *= 8
        hits = _grouped(found, depth) if params.group_by_document else [
            DocumentHit(document_id=row["document_id"], title=row["title"], score=round(score, 6),
                        passages=[_passage(row, score)]) for row, score in found[:depth]]
        hits = hits[params.offset:]
        return DocumentSearchResult(items=hits, mode=mode)


def _passage(row: dict[str, Any], score: float) -> Passage:
    return Passage(text=row["text"], score=round(score, 6), citation=Citation(
        document_id=row["document_id"], title=row["title"], page=row["page"], start=row["start"], end=row["end"],
        passage_index=row["idx"]))


def _grouped(found: list[tuple[dict[str, Any], float]], limit: int) -> list[DocumentHit]:
    """Each document once, ranked by its best passage, with up to three of its passages, best first."""
    by_document: dict[str, list[tuple[dict[str, Any], float]]] = defaultdict(list)
    for row, score in found:
        by_document[row["document_id"]].append((row, score))
    ranked = sorted(by_document.values(), key=lambda hits: -hits[0][1])[:limit]
    return [DocumentHit(document_id=hits[0][0]["document_id"], title=hits[0][0]["title"], score=round(hits[0][1], 6),
                        passages=[_passage(row, score) for row, score in hits[:PASSAGES_PER_DOCUMENT]])
            for hits in ranked]
