"""Retrieval quality, measured on the evaluation sets, on both stores, beside plain BM25 computed here.

The sets are read from `../shared/data/` (or `PARLEY_EVAL_DATA`): evaluation data, never copied into
the repository. Without them these tests skip and say why. The full figures (every mode, both
stores, speed at scale) are `bench/memory.py`'s and `bench/documents.py`'s; these hold the line in
every test run: lexical memory on both stores (the BM25 SQL is one, shared by memories and documents,
and must rank alike on both), lexical documents and hybrid memory once. Documents run on SQLite only:
ingesting SciFact's 5,183 abstracts one `documents.add` at a time is most of a minute there and
several on PostgreSQL, and what they would add there (that SQL on that store) the memory test
checks. Computing 1,450 embeddings takes a while, SciFact's 7,200 passages much longer: hybrid
documents are the bench's.
"""

from pathlib import Path
from statistics import mean

import anyio
import pytest

from bench.datasets import MissingData, PlainBm25, evidence_recall, locomo, ndcg_at_10, scifact
from hub.retrieval.embeddings import installed

from .conftest import diagonal
from .inprocess import LocalHub, local_hub

pytestmark = [pytest.mark.anyio, pytest.mark.long]

LEXICAL_RECALL_AT_5 = 0.52
HYBRID_RECALL_AT_5 = 0.58
LEXICAL_NDCG_AT_10 = 0.66

ONCE = pytest.mark.parametrize(("anyio_backend", "store_kind"), [("asyncio", "sqlite")], indirect=True,
                               scope="session")
"""For what the store does not change: asyncio on SQLite only."""


async def memory_recall_at_5(local: LocalHub, mode: str) -> tuple[float, float]:
    """LoCoMo evidence recall@5 of `memories.search` in `mode`, and of plain BM25 over the same turns."""
    try:
        conversations = locomo()
    except MissingData as missing:
        pytest.skip(str(missing))
    ours, floor = [], []
    for conversation in conversations:
        agent = await local.agent("locomo")  # one agent per conversation: its memories are one scope
        text_of = {turn.dia_id: turn.text for turn in conversation.turns}
        for turn in conversation.turns:
            await local.as_agent(agent, "memories.create", {"content": turn.text})
        if mode != "lexical":
            distinct = len(set(text_of.values()))
            with anyio.fail_after(120):
                while (await local.as_agent(agent, "memories.stats", {}))["embedded"] < distinct:
                    await anyio.sleep(0.1)
        plain = PlainBm25(text_of)
        for question in conversation.questions:
            found = await local.as_agent(agent, "memories.search", {"query": question.text, "mode": mode, "limit": 5})
            ours.append(evidence_recall([hit["memory"]["content"] for hit in found["items"]], question, text_of, 5))
            floor.append(evidence_recall([text_of[key] for key in plain.search(question.text, 5)], question,
                                         text_of, 5))
    return mean(ours), mean(floor)


@diagonal
async def test_lexical_memory_recall_beats_plain_bm25_and_its_target(tmp_path: Path, store_kind: str) -> None:
    async with local_hub(tmp_path, store_kind, embeddings="off") as local:
        recall, floor = await memory_recall_at_5(local, "lexical")
    assert recall >= LEXICAL_RECALL_AT_5 and recall >= floor, (recall, floor)


@ONCE
@pytest.mark.timeout(300)  # about 50 s alone, 90 s beside the rest of the suite: 1,450 embeddings
async def test_hybrid_memory_recall_beats_lexical_and_its_target(tmp_path: Path, store_kind: str) -> None:
    if not installed():
        pytest.skip("the embeddings extra is not installed (pip install 'parley-hub[embeddings]')")
    async with local_hub(tmp_path, store_kind, embeddings="on") as local:
        recall, floor = await memory_recall_at_5(local, "hybrid")
    assert recall >= HYBRID_RECALL_AT_5 and recall >= floor, (recall, floor)


async def document_ndcg_at_10(local: LocalHub) -> tuple[float, float]:
    """SciFact nDCG@10 of lexical `documents.search` (each abstract added through `documents.add`, each
    claim asked with `group_by_document`), and of plain BM25 over the same abstracts."""
    try:
        data = scifact()
    except MissingData as missing:
        pytest.skip(str(missing))
    agent = await local.agent("scifact")
    gate = anyio.Semaphore(8)

    async def add(doc_id: str, text: str) -> None:
        async with gate:
            await local.as_agent(agent, "documents.add", {"title": doc_id, "text": text})

    async with anyio.create_task_group() as tg:
        for doc_id, text in data.documents.items():
            tg.start_soon(add, doc_id, text)
    with anyio.fail_after(600):
        while (status := await local.as_agent(agent, "documents.status", {}))["state"] == "in_progress":
            await anyio.sleep(0.2)
    assert (status["state"], status["processed"]) == ("completed", len(data.documents))
    plain = PlainBm25(data.documents)
    ours, floor = [], []
    for query_id, query in data.queries.items():
        found = await local.as_agent(agent, "documents.search", {"query": query, "mode": "lexical", "limit": 10,
                                                                 "group_by_document": True})
        ours.append(ndcg_at_10([hit["title"] for hit in found["items"]], data.relevant[query_id]))
        floor.append(ndcg_at_10(plain.search(query, 10), data.relevant[query_id]))
    return mean(ours), mean(floor)


@ONCE
@pytest.mark.timeout(360)  # about 110 s alone, up to twice that beside the rest of the suite
async def test_lexical_document_search_beats_plain_bm25_and_its_target(tmp_path: Path, store_kind: str) -> None:
    async with local_hub(tmp_path, store_kind, embeddings="off") as local:
        ndcg, floor = await document_ndcg_at_10(local)
    assert ndcg >= LEXICAL_NDCG_AT_10 and ndcg >= floor, (ndcg, floor)
