"""The retrieval evaluation sets, read from where they lie (`../shared/data/`, or `PARLEY_EVAL_DATA`) and
never copied: they are licensed for evaluation only (CC BY-NC 4.0).

- LoCoMo (`locomo-dev.json`): long two-person conversations and questions about them; scored by
  evidence recall@k (the fraction of a question's evidence turns found in the top k).
- SciFact (`scifact-dev/`, BEIR layout): abstracts and claims; scored by nDCG@10 and recall@100.

Each loader returns plain data; `plain_bm25_*` compute the floor every scenario reports beside Parley:
SQLite FTS5's `bm25()` (k1 1.2, b 0.75) over the same texts, every query word quoted and OR-ed, as the
sets' README measures it.
"""

import json
import math
import os
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_DIR: Final = Path(__file__).resolve().parents[2] / "shared" / "data"
QUESTION_CATEGORIES: Final = (1, 2, 3, 4)
"""LoCoMo's multi-hop, temporal, open-domain and single-hop questions (5, adversarial, is left out)."""


def data_dir() -> Path:
    return Path(os.environ.get("PARLEY_EVAL_DATA", DEFAULT_DIR))


class MissingData(Exception):
    """The evaluation data is not where it should be."""


@dataclass(frozen=True)
class Turn:
    dia_id: str
    text: str
    """As the sets' baselines index it: `speaker: text`, plus ` caption` when the turn shares an image."""


@dataclass(frozen=True)
class Question:
    text: str
    evidence: tuple[str, ...]
    category: int


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    turns: tuple[Turn, ...]
    questions: tuple[Question, ...]


def _clean_evidence(raw: Iterable[str], known: set[str]) -> tuple[str, ...]:
    """Evidence ids as the README says to clean them: split multi-id fields, fix `D:11:26` and `D30:05`."""
    ids: list[str] = []
    for field in raw:
        for part in re.split(r"[;\s]+", field.strip()):
            match = re.fullmatch(r"D:?(\d+):0*(\d+)", part)
            if match and (dia_id := f"D{int(match.group(1))}:{int(match.group(2))}") in known:
                ids.append(dia_id)
    return tuple(dict.fromkeys(ids))


def locomo() -> list[Conversation]:
    path = data_dir() / "locomo-dev.json"
    if not path.is_file():
        raise MissingData(f"no LoCoMo set at {path} (set PARLEY_EVAL_DATA to the folder holding it)")
    conversations = []
    for sample in json.loads(path.read_text()):
        body = sample["conversation"]
        turns = []
        for key in sorted((k for k in body if re.fullmatch(r"session_\d+", k)), key=lambda k: int(k.split("_")[1])):
            for turn in body[key]:
                text = f"{turn['speaker']}: {turn['text']}"
                if turn.get("blip_caption"):
                    text += " " + turn["blip_caption"]
                turns.append(Turn(turn["dia_id"], text))
        known = {turn.dia_id for turn in turns}
        questions = [
            Question(item["question"], evidence, item["category"])
            for item in sample["qa"]
            if item.get("category") in QUESTION_CATEGORIES
            and (evidence := _clean_evidence(item.get("evidence") or [], known))
        ]
        conversations.append(Conversation(sample["sample_id"], tuple(turns), tuple(questions)))
    return conversations


def evidence_recall(found_texts: Sequence[str], question: Question, turn_text: Mapping[str, str], k: int) -> float:
    """The fraction of the question's evidence turns whose text appears in one of the first `k` found items."""
    top = found_texts[:k]
    hits = sum(1 for dia_id in question.evidence if any(turn_text[dia_id] in item for item in top))
    return hits / len(question.evidence)


@dataclass(frozen=True)
class Beir:
    documents: dict[str, str]
    """id -> title and text."""
    queries: dict[str, str]
    relevant: dict[str, set[str]]


def scifact() -> Beir:
    folder = data_dir() / "scifact-dev"
    if not (folder / "corpus.jsonl").is_file():
        raise MissingData(f"no SciFact set at {folder} (set PARLEY_EVAL_DATA to the folder holding scifact-dev/)")
    documents = {}
    for line in (folder / "corpus.jsonl").read_text().splitlines():
        row = json.loads(line)
        documents[row["_id"]] = f"{row['title']}\n\n{row['text']}".strip()
    queries = {row["_id"]: row["text"] for row in map(json.loads, (folder / "queries.jsonl").read_text().splitlines())}
    relevant: dict[str, set[str]] = {}
    for line in (folder / "qrels" / "train.tsv").read_text().splitlines()[1:]:
        query_id, doc_id, score = line.split("\t")
        if int(score) > 0:
            relevant.setdefault(query_id, set()).add(doc_id)
    return Beir(documents, {q: queries[q] for q in relevant}, relevant)


def ndcg_at_10(ranked: Sequence[str], relevant: set[str]) -> float:
    dcg = sum(1 / math.log2(rank + 2) for rank, doc in enumerate(ranked[:10]) if doc in relevant)
    ideal = sum(1 / math.log2(rank + 2) for rank in range(min(10, len(relevant))))
    return dcg / ideal if ideal else 0.0


def recall_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant)


class PlainBm25:
    """The floor: SQLite FTS5 `bm25()` over texts (porter unicode61), queries as quoted words OR-ed."""

    def __init__(self, texts: Mapping[str, str]) -> None:
        self._db = sqlite3.connect(":memory:")
        self._db.execute("CREATE VIRTUAL TABLE items USING fts5(key UNINDEXED, body, tokenize='porter unicode61')")
        self._db.executemany("INSERT INTO items(key, body) VALUES (?, ?)", texts.items())

    def search(self, query: str, k: int) -> list[str]:
        words = re.findall(r"\w+", query.lower())
        if not words:
            return []
        match = " OR ".join(f'"{word}"' for word in words)
        rows = self._db.execute("SELECT key FROM items WHERE items MATCH ? ORDER BY bm25(items) LIMIT ?", (match, k))
        return [key for (key,) in rows]
