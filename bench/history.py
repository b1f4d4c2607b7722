"""History at scale (issue #6, scenario 3): `messages.list` and `conversations.list` p50/p99 on a store of
1,000,000 messages, over HTTP JSON-RPC (`POST /rpc`), against two floors measured in the same run:

- `auth.whoami` through the same transport (same client, same connection, same auth): what any call
  costs before it touches history;
- the raw SQL of the listing (the storage query the service runs, on the hub's engine settings, in
  this process): what the database itself needs.

    .venv/bin/python -m bench.history [--backend asyncio|trio|both] [--quick] [--store DIR]

The store is written directly (INSERTs built from `storage/schema.py`'s tables, run with `executemany`
on SQLAlchemy's connection, values pre-encoded exactly as SQLAlchemy would (checked on the first rows),
`journal_mode=OFF` while loading; ~45 s for 1M messages here) into a database the hub's own migrations
created, with what the hub would have written: agents, conversations with `last_seq`/`activity`, members
with read markers, messages with gapless `seq` (a `created` system message at seq 1), and a
`message.created` / `conversation.created` event per message with its deliveries. Shape: 1,000
conversations (20 big ones of 20,000 messages; the rest ~612 each; 60 % of the small ones direct), 400
agents, and the measured reader in 100 conversations (10 big), most read up to date, some with a backlog
of a few hundred unread. Messages are interleaved in time across conversations, as on a live hub.
`--store DIR` keeps the built store in DIR and reuses it next time.

Requests are sent one at a time (latency, not throughput): a p99 of one reader, with the client on one
core and the hub on the other (2026-11-22: hub ~0.9 core busy, client ~0.1).
"""

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

from bench.clients import running_hub
from bench.http_floors import (
    BenchAgent,
    RawHttp,
    Sample,
    drive,
    expect,
    interleaved,
    json_headers,
    register,
    run_client,
)
from bench.report import Figure, add_common_options, add_load_options, backends, emit, load_plan, percentile
from protocol.conversations import ConversationInfo, ConversationKind
from protocol.events import Event, EventType
from protocol.messages import ContentType, Message, MessageKind, SystemAction, SystemNotice
from storage.queries import conversations as conversation_queries
from storage.queries import messages as message_queries
from storage.schema import UTCDateTime, agents, conversation_members, conversations, deliveries, events, messages
from storage.store import create_store_engine
from tests.servers import HubServer, make_server

TARGET_P99_MS: Final = 10.0
PAGE: Final = 50
BATCH: Final = 20_000
_ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"


@dataclass(frozen=True)
class Shape:
    messages: int
    conversations: int
    big: int
    big_share: float
    agents: int
    reader_conversations: int
    reader_big: int


FULL: Final = Shape(messages=1_000_000, conversations=1000, big=20, big_share=0.4, agents=400,
                    reader_conversations=100, reader_big=10)
QUICK: Final = Shape(messages=20_000, conversations=100, big=4, big_share=0.4, agents=40,
                     reader_conversations=20, reader_big=2)


@dataclass
class Conv:
    id: str
    kind: ConversationKind
    members: list[str]
    count: int
    """Messages in its timeline, the seq-1 system message included."""
    created_at: datetime
    last_event: int = 0
    last_at: datetime | None = None


@dataclass(frozen=True)
class Built:
    """What the benchmark needs to know about a built store (kept beside it as bench.json)."""

    reader: dict[str, str]
    conversations: list[str]
    """The reader's conversations."""
    big: dict[str, int]
    """The reader's big conversations and their last seq."""
    seconds: float
    shape: dict[str, Any]


# -- building the store ----------------------------------------------------------------------------------


def id_at(prefix: str, at: datetime, rng: random.Random) -> str:
    """An id in protocol.ids' layout (48 bits of ms, 80 random bits) for a given time: ids sort by it."""
    value = (int(at.timestamp() * 1000) << 80) | rng.getrandbits(80)
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def iso(at: datetime) -> str:
    """A datetime as the wire models serialize it (pydantic: RFC 3339 with `Z`)."""
    return at.isoformat().replace("+00:00", "Z")


def message_payload(row: dict[str, Any]) -> dict[str, Any]:
    """The `message` of an event, built by hand: 1M pydantic dumps would take most of the build time.
    `check_payloads` proves it equals what the hub's models produce."""
    return {"message_id": row["id"], "conversation_id": row["conversation_id"], "seq": row["seq"],
            "kind": row["kind"], "sender_id": row["sender_id"], "content_type": row["content_type"],
            "body": row["body"], "metadata": row["metadata"] or {}, "system": row["system"], "reply_to": None,
            "client_msg_id": None, "created_at": iso(row["created_at"]), "edited_at": None, "revision": 0,
            "deleted_at": None, "attachments": []}


def event_payload(row: dict[str, Any], type: EventType, conversation: dict[str, Any] | None) -> dict[str, Any]:
    return {"type": type.value, "conversation_id": row["conversation_id"], "actor_id": row["sender_id"],
            "at": iso(row["created_at"]), "message": message_payload(row), "conversation": conversation,
            "read": None, "memory_id": None, "memory": None, "document": None, "progress": None, "execution": None,
            "node": None}


def conversation_info(conv: Conv, title: str | None) -> dict[str, Any]:
    return {"conversation_id": conv.id, "kind": conv.kind.value, "title": title, "topic": None,
            "created_by": conv.members[0], "created_at": iso(conv.created_at)}


def check_payloads(row: dict[str, Any], info: dict[str, Any] | None, type: EventType) -> None:
    """The hand-built payload must be exactly the hub's (`timeline.emit`)."""
    from hub.services.views import message_of

    message: Message = message_of(row)  # type: ignore[arg-type]
    event = Event(cursor=0, type=type, conversation_id=row["conversation_id"], actor_id=row["sender_id"],
                  at=row["created_at"], message=message,
                  conversation=ConversationInfo.model_validate(info) if info else None)
    expected = event.model_dump(mode="json", exclude={"cursor"})
    if expected != event_payload(row, type, info):
        raise AssertionError(f"hand-built event payload differs:\n{expected}\n{event_payload(row, type, info)}")


def plan(shape: Shape, reader_id: str, agent_ids: list[str], start: datetime, rng: random.Random) -> list[Conv]:
    """Conversations, their members and message counts; the reader sits in `reader_conversations` of them."""
    small = shape.conversations - shape.big
    big_each = int(shape.messages * shape.big_share) // shape.big
    small_total = shape.messages - big_each * shape.big
    reader_in = set(range(shape.reader_big)) | set(
        rng.sample(range(shape.big, shape.conversations), shape.reader_conversations - shape.reader_big))
    pairs: set[frozenset[str]] = set()
    convs = []
    for index in range(shape.conversations):
        is_big = index < shape.big
        direct = not is_big and rng.random() < 0.6
        while True:
            members = rng.sample(agent_ids, 2 if direct else rng.randint(3, 6))
            if index in reader_in:
                members[rng.randrange(len(members))] = reader_id
            if len(set(members)) == len(members) and not (direct and frozenset(members) in pairs):
                break
        if direct:
            pairs.add(frozenset(members))
        count = big_each if is_big else small_total // small + (1 if index - shape.big < small_total % small else 0)
        at = start + timedelta(milliseconds=index)
        kind = ConversationKind.DIRECT if direct else ConversationKind.GROUP
        convs.append(Conv(id_at("cnv", at, rng), kind, members, count, at))
    return convs


def timeline(convs: list[Conv], rng: random.Random) -> list[int]:
    """Which conversation each message after the seq-1 ones goes to, interleaved in time."""
    stream = [index for index, conv in enumerate(convs) for _ in range(conv.count - 1)]
    rng.shuffle(stream)
    return stream


def bodies(rng: random.Random, count: int = 2000) -> list[str]:
    """Message texts of 4 to 45 words (~20-300 characters), drawn from a pool: realistic sizes, cheap to make."""
    words = [
        "agent", "hub", "message", "the", "a", "of", "to", "and", "reply", "paper", "result",
        "task", "status", "done", "plan", "review", "send", "read", "summary", "update", "data",
        "model", "query", "index", "page", "cursor", "latency", "benchmark", "retry", "queue",
        "error", "ok",
    ]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 45))) for _ in range(count)]


def message_row(conv: Conv, seq: int, sender: str, at: datetime, body: str | None, mid: str) -> dict[str, Any]:
    system = None
    if body is None:
        system = SystemNotice(action=SystemAction.CREATED, agent_ids=conv.members).model_dump(mode="json")
    return {"id": mid, "conversation_id": conv.id, "seq": seq,
            "kind": (MessageKind.SYSTEM if body is None else MessageKind.MESSAGE).value, "sender_id": sender,
            "content_type": ContentType.TEXT.value, "body": body, "metadata": None if body is None else {},
            "system": system, "reply_to": None, "client_msg_id": None, "created_at": at, "edited_at": None,
            "revision": 0, "deleted_at": None, "attachments": None, "request_hash": None, "version": 0}


def event_row(message: dict[str, Any], event_id: int, type: EventType, info: dict[str, Any] | None) -> dict[str, Any]:
    return {"id": event_id, "type": type.value, "subject_id": message["id"],
            "payload": event_payload(message, type, info), "created_at": message["created_at"]}


def check_row(row: dict[str, Any], event_id: int, type: EventType, info: dict[str, Any] | None) -> None:
    """The first row of each kind is checked against what the hub's own code would write."""
    check_payloads(row, info, type)
    check_encoding({messages: row, events: event_row(row, event_id, type, info),
                    deliveries: {"agent_id": row["sender_id"], "event_id": event_id}})


def sqlite_value(column: sa.Column[Any]) -> Callable[[Any], Any]:
    """How SQLAlchemy would store a Python value of `column` on SQLite, done directly.

    Going through SQLAlchemy's per-row parameter processing costs more than the insert itself at 5M
    rows; `check_encoding` proves this gives the very bytes SQLAlchemy writes."""
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return lambda at: None if at is None else f"{at:%Y-%m-%d %H:%M:%S.%f}"
    if isinstance(kind, sa.JSON):
        return json.dumps  # None becomes 'null', as SQLAlchemy's JSON type (none_as_null=False) writes it
    if isinstance(kind, sa.Boolean):
        return lambda value: None if value is None else int(value)
    return lambda value: value


class Loader:
    """Buffers rows per table and writes them with `executemany` in batches, through SQLAlchemy Core
    statements built from `storage/schema.py` (the column list and order come from the tables)."""

    def __init__(self, conn: sa.Connection, tables: tuple[sa.Table, ...] = (messages, events, deliveries)) -> None:
        self.conn = conn
        self.rows: dict[sa.Table, list[tuple[Any, ...]]] = {table: [] for table in tables}
        self._sql = {table: f"INSERT INTO {table.name} ({', '.join(table.columns.keys())}) "
                            f"VALUES ({', '.join('?' * len(table.columns))})" for table in tables}
        self._encode = {table: [(name, sqlite_value(column)) for name, column in table.columns.items()]
                        for table in tables}

    def encode(self, table: sa.Table, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(encode(row[name]) for name, encode in self._encode[table])

    def put(self, table: sa.Table, row: dict[str, Any]) -> None:
        self.rows[table].append(self.encode(table, row))

    def add(self, message: dict[str, Any], event_id: int, type: EventType, members: list[str],
            info: dict[str, Any] | None = None) -> None:
        self.put(messages, message)
        self.put(events, event_row(message, event_id, type, info))
        self.rows[deliveries].extend((agent, event_id) for agent in members)
        if len(self.rows[messages]) >= BATCH:
            self.flush()

    def flush(self) -> None:
        for table, rows in self.rows.items():
            if rows:
                self.conn.exec_driver_sql(self._sql[table], rows)
                rows.clear()


def check_encoding(samples: dict[sa.Table, dict[str, Any]]) -> None:
    """Each sample row, stored by SQLAlchemy and by `Loader`, must read back byte for byte the same."""
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        for table, row in samples.items():
            table.create(conn)
            conn.execute(table.insert(), [row])
            by_sqlalchemy = conn.exec_driver_sql(f"SELECT * FROM {table.name}").fetchall()
            conn.exec_driver_sql(f"DELETE FROM {table.name}")
            loader = Loader(conn, (table,))
            loader.put(table, row)
            loader.flush()
            by_loader = conn.exec_driver_sql(f"SELECT * FROM {table.name}").fetchall()
            if by_sqlalchemy != by_loader:
                raise AssertionError(f"{table.name}: {by_sqlalchemy} != {by_loader}")
    engine.dispose()


def build_store(db: Path, shape: Shape, reader: BenchAgent, seed: int = 6) -> tuple[list[Conv], float]:
    """Write the agents, conversations, members, messages, events and deliveries; return them and the seconds."""
    rng = random.Random(seed)
    started = time.perf_counter()
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=30)
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-1000000", "foreign_keys=OFF"):
            conn.exec_driver_sql(f"PRAGMA {pragma}")
        conn.commit()
        with conn.begin():
            agent_ids = insert_agents(conn, shape.agents, start, rng)
            convs = plan(shape, reader.agent_id, agent_ids, start, rng)
            first_event = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.id), 0))).scalar_one()) + 1
            load_timelines(conn, convs, start, now, first_event, rng)
            insert_conversations(conn, convs, reader.agent_id, rng)
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        conn.commit()
    engine.dispose()
    return convs, time.perf_counter() - started


def insert_agents(conn: sa.Connection, count: int, at: datetime, rng: random.Random) -> list[str]:
    """Other agents, written directly: they never log in, so a placeholder recovery hash is enough."""
    rows = [{"id": id_at("agt", at, rng), "handle": f"bench-agent-{i}", "display_name": None, "description": None,
             "visibility": "public", "metadata": {}, "is_admin": False, "recovery_key_hash": "-",
             "credential_epoch": 0, "created_at": at, "updated_at": at} for i in range(count)]
    conn.execute(agents.insert(), rows)
    return [row["id"] for row in rows]


def load_timelines(conn: sa.Connection, convs: list[Conv], start: datetime, end: datetime, first_event: int,
                   rng: random.Random) -> None:
    loader = Loader(conn)
    texts = bodies(rng)
    stream = timeline(convs, rng)  # before the counts are reset: they become the running seq
    event_id = first_event
    for index, conv in enumerate(convs):  # seq 1: the `created` notice, as `conversations._start` writes it
        title = None if conv.kind is ConversationKind.DIRECT else f"group {index}"
        row = message_row(conv, 1, conv.members[0], conv.created_at, None, id_at("msg", conv.created_at, rng))
        info = conversation_info(conv, title)
        if index == 0:
            check_row(row, event_id, EventType.CONVERSATION_CREATED, info)
        loader.add(row, event_id, EventType.CONVERSATION_CREATED, conv.members, info)
        conv.last_event, conv.last_at, conv.count = event_id, conv.created_at, 1
        event_id += 1
    first = start + timedelta(hours=1)
    step = (end - first) / max(len(stream), 1)
    for n, index in enumerate(stream):
        conv = convs[index]
        at = first + step * n
        conv.count += 1
        row = message_row(conv, conv.count, rng.choice(conv.members), at, rng.choice(texts), id_at("msg", at, rng))
        if n == 0:
            check_row(row, event_id, EventType.MESSAGE_CREATED, None)
        loader.add(row, event_id, EventType.MESSAGE_CREATED, conv.members)
        conv.last_event, conv.last_at = event_id, at
        event_id += 1
    loader.flush()


def reader_backlog(rng: random.Random) -> int:
    """Unread messages the reader has in a conversation: mostly none or a few, sometimes hundreds."""
    roll = rng.random()
    return 0 if roll < 0.6 else rng.randint(1, 20) if roll < 0.95 else rng.randint(100, 500)


def insert_conversations(conn: sa.Connection, convs: list[Conv], reader_id: str, rng: random.Random) -> None:
    rows, members = [], []
    for index, conv in enumerate(convs):
        direct = conv.kind is ConversationKind.DIRECT
        assert conv.last_at is not None
        rows.append({"id": conv.id, "kind": conv.kind.value, "title": None if direct else f"group {index}",
                     "topic": None, "direct_key": ":".join(sorted(conv.members)) if direct else None,
                     "created_by": conv.members[0], "created_at": conv.created_at, "updated_at": conv.created_at,
                     "last_seq": conv.count, "activity": conv.last_event, "last_activity_at": conv.last_at})
        for position, agent in enumerate(conv.members):
            unread = reader_backlog(rng) if agent == reader_id else rng.randint(0, 50)
            members.append({"conversation_id": conv.id, "agent_id": agent,
                            "role": "member" if direct or position else "owner", "joined_at": conv.created_at,
                            "joined_seq": 1, "left_at": None, "left_seq": None,
                            "last_read_seq": max(0, conv.count - unread)})
    conn.execute(conversations.insert(), rows)
    conn.execute(conversation_members.insert(), members)


def prepare(server: HubServer, shape: Shape, store_dir: Path | None) -> Built:
    """Start the hub once (migrations, admin), register the reader, stop it, bulk-load the store."""
    marker = store_dir / "bench.json" if store_dir else None
    if marker is not None and marker.exists():
        return Built(**json.loads(marker.read_text()))
    server.launch()
    try:
        reader = register(server, f"reader-{random.randrange(10**6)}")
    finally:
        server.stop()
    assert server.sqlite_path is not None
    convs, seconds = build_store(server.sqlite_path, shape, reader)
    mine = [conv for conv in convs if reader.agent_id in conv.members]
    built = Built(reader=asdict(reader), conversations=[conv.id for conv in mine],
                  big={conv.id: conv.count for conv in convs[:shape.big] if reader.agent_id in conv.members},
                  seconds=round(seconds, 1), shape=asdict(shape))
    if marker is not None:
        marker.write_text(json.dumps(asdict(built)))
    return built


# -- measuring -------------------------------------------------------------------------------------------


def rpc_body(method: str, params: dict[str, Any]) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()


def rpc_request(headers: list[tuple[str, str]], bodies: list[bytes]) -> Callable[[RawHttp, int], Any]:
    """POST /rpc cycling through `bodies`; a JSON-RPC error fails the run."""
    async def request(conn: RawHttp, n: int) -> None:
        body = expect(*(await conn.request("POST", "/rpc", headers, bodies[n % len(bodies)]))[::2])
        if b'"error"' in body[:40]:
            raise RuntimeError(body[:300])
    return request


def queries(built: Built, rng: random.Random) -> dict[str, list[bytes]]:
    """The request bodies of each listing, varied over the reader's conversations and depths."""
    deep_before, deep_after = [], []
    for conversation_id, last_seq in built.big.items():
        for _ in range(20):
            deep_before.append({"conversation_id": conversation_id, "before": rng.randint(last_seq // 5, last_seq // 2),
                                "limit": PAGE})
            deep_after.append({"conversation_id": conversation_id, "after": rng.randint(last_seq // 5, last_seq // 2),
                               "limit": PAGE})
    latest = [{"conversation_id": conversation_id, "limit": PAGE} for conversation_id in built.conversations]
    return {
        "auth.whoami (floor)": [rpc_body("auth.whoami", {})],
        "messages.list latest": [rpc_body("messages.list", p) for p in latest],
        "messages.list deep before": [rpc_body("messages.list", p) for p in deep_before],
        "messages.list deep after": [rpc_body("messages.list", p) for p in deep_after],
        "conversations.list first page": [rpc_body("conversations.list", {"limit": PAGE})],
    }


def sql_floor(db: Path, name: str, bodies: list[bytes], reader_id: str, repeat: int) -> list[float]:
    """Seconds per run of the storage query behind `name`, on the hub's engine settings (no HTTP, no models)."""
    engine = create_store_engine(f"sqlite:///{db}")
    params = [json.loads(body)["params"] for body in bodies]
    samples = []
    with engine.connect() as conn:
        for i in range(repeat):
            p = params[i % len(params)]
            started = time.perf_counter()
            with conn.begin():
                if name.startswith("messages.list"):
                    message_queries.list_messages(conn, p["conversation_id"], from_seq=1, after=p.get("after"),
                                                  before=p.get("before"), limit=PAGE + 1, hide_blocked_for=reader_id)
                else:
                    conversation_queries.list_for_agent(conn, reader_id, before=None, limit=PAGE + 1)
            samples.append(time.perf_counter() - started)
    engine.dispose()
    return samples


def measure(server: HubServer, built: Built, seconds: float, rounds: int) -> dict[str, Sample]:
    headers = json_headers(built.reader["api_key"])
    variants = queries(built, random.Random(7))
    assert server.process is not None
    pid = server.process.pid

    async def main() -> dict[str, Sample]:
        runs = {name: (lambda b=b: drive(server.port, pid, rpc_request(headers, b), concurrency=1,
                                         seconds=seconds / rounds))
                for name, b in variants.items()}
        return await interleaved(runs, rounds)

    return run_client(main)


def figures(backend: str, samples: dict[str, Sample], sql: dict[str, list[float]], built: Built) -> list[Figure]:
    floor = samples.pop("auth.whoami (floor)")
    out = [Figure("history", "auth.whoami p99 (floor)", floor.ms(0.99), "ms", backend,
                  details={"p50_ms": floor.ms(0.5), "requests": len(floor.latencies), **floor.cpu()})]
    for name, sample in samples.items():
        raw = sql[name]
        details = {"p50_ms": round(sample.ms(0.5), 3), "floor_p50_ms": round(floor.ms(0.5), 3),
                   "sql_p50_ms": round(percentile(raw, 0.5) * 1000, 3),
                   "sql_p99_ms": round(percentile(raw, 0.99) * 1000, 3),
                   "requests": len(sample.latencies), "messages": built.shape["messages"], **sample.cpu()}
        p99 = sample.ms(0.99)
        for metric, value in (("p50", sample.ms(0.5)), ("p99", p99)):
            out.append(Figure("history", f"{name} {metric}", value, "ms", backend,
                              floor=floor.ms(0.5 if metric == "p50" else 0.99), floor_name="whoami",
                              target=f"p99 <= {TARGET_P99_MS:g} ms" if metric == "p99" else "",
                              met=(p99 <= TARGET_P99_MS) if metric == "p99" and backend == "asyncio" else None,
                              details=details))
        out.append(Figure("history", f"{name} p99 vs raw SQL", p99, "ms", backend,
                          floor=percentile(raw, 0.99) * 1000, floor_name="SQL p99"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(parser)
    add_load_options(parser)
    parser.add_argument("--store", type=Path, help="build the store here and reuse it on later runs")
    args = parser.parse_args()
    shape = QUICK if args.quick else FULL
    seconds, rounds = load_plan(args)
    if args.store:
        args.store.mkdir(parents=True, exist_ok=True)
    all_figures: list[Figure] = []
    with _store_dir(args.store) as data_dir:
        server = make_server("asyncio", "sqlite", data_dir)
        if not (data_dir / "parley.db").exists():
            migrated = server.run_cli("migrate")
            assert migrated.returncode == 0, migrated.stderr
        built = prepare(server, shape, args.store)
        print(f"store: {built.shape['messages']:,} messages, built in {built.seconds:.1f} s "
              f"(reader in {len(built.conversations)} conversations)")
        sql = {name: sql_floor(data_dir / "parley.db", name, bodies, built.reader["agent_id"], 2000)
               for name, bodies in queries(built, random.Random(7)).items() if name != "auth.whoami (floor)"}
        for backend in backends(args.backend):
            with running_hub(backend, data_dir) as hub:
                samples = measure(hub, built, seconds, rounds)
            all_figures += figures(backend, samples, sql, built)
    for figure in all_figures:
        figure.details["store_build_seconds"] = built.seconds
    emit(all_figures, json_path=args.json_path)


@contextmanager
def _store_dir(path: Path | None) -> Iterator[Path]:
    """`path`, or a temporary directory removed afterwards."""
    if path is not None:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="parley-history-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    main()
