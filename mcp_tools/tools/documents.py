"""Tools for the document store: search it with citations, add to it, see how ingestion goes.

Results are compact: each passage with the citation a model needs to quote and link it (document,
title, page, characters), never whole documents; a document's full text is a resource
(`parley://documents/{id}`) a client reads when it wants it.
"""

from typing import Annotated, Any

from pydantic import BaseModel, Field

from ..access import HubCaller
from .base import Toolset

toolset = Toolset()


class Cited(BaseModel):
    text: str
    document_id: str
    title: str
    page: int | None = None
    chars: str = Field(description="start-end in the document's text")
    score: float


class Found(BaseModel):
    passages: list[Cited]


class Added(BaseModel):
    document_id: str
    title: str
    state: str


class Status(BaseModel):
    state: str
    percent: float
    processed: int
    total: int
    failed: int | None = None
    current: str | None = None
    eta_seconds: float | None = None


@toolset.tool("Search documents", operations=("documents.search",))
async def search_documents(
    hub: HubCaller,
    query: Annotated[str, Field(min_length=1)],
    limit: Annotated[int, Field(ge=1, le=20)] = 5,
    conversation: Annotated[str | None, Field(description="Also its documents")] = None,
) -> Found:
    """Passages of your documents that answer a question, best first, each with its citation."""
    params: dict[str, Any] = {"query": query, "limit": limit}
    if conversation is not None:
        params["conversation_id"] = conversation
    found = await hub.call("documents.search", params)
    return Found(passages=[
        Cited(text=passage["text"], document_id=passage["citation"]["document_id"], title=passage["citation"]["title"],
              page=passage["citation"]["page"], chars=f"{passage['citation']['start']}-{passage['citation']['end']}",
              score=round(passage["score"], 4))
        for hit in found["items"] for passage in hit["passages"]
    ])


@toolset.tool("Add a document", operations=("documents.add",))
async def add_document(
    hub: HubCaller,
    title: Annotated[str | None, Field(max_length=256)] = None,
    text: Annotated[str | None, Field(min_length=1)] = None,
    file_id: Annotated[str | None, Field(description="fil_ id of an uploaded file")] = None,
    conversation: Annotated[str | None, Field(description="Add to its store")] = None,
) -> Added:
    """Add text (with a title) or an uploaded file to your document store; it is ingested in the background."""
    params = {k: v for k, v in {"title": title, "text": text, "file_id": file_id,
                                "conversation_id": conversation}.items() if v is not None}
    document = await hub.call("documents.add", params)
    return Added(document_id=document["document_id"], title=document["title"], state=document["state"])


@toolset.tool("Document status", operations=("documents.status",))
async def document_status(
    hub: HubCaller, conversation: Annotated[str | None, Field(description="Its store; default yours")] = None
) -> Status:
    """How ingestion of your store's latest documents goes: percent, how many done, an ETA."""
    status = await hub.call("documents.status", {"conversation_id": conversation} if conversation else {})
    return Status(state=status["state"], percent=status["percent"], processed=status["processed"],
                  total=status["total"], failed=status["failed"] or None, current=status["current_title"],
                  eta_seconds=status["eta_seconds"])
