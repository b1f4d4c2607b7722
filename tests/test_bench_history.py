"""The history benchmark writes its million messages straight into SQLite, bypassing the hub, and checks
every hand-built row and event against the hub's own models as it goes. The schema and the models grow
with each feature; this builds a small store the same way, so a column or an event field the builder
misses fails here rather than in the next `make bench`."""

from pathlib import Path

from bench.history import Shape, build_store
from bench.http_floors import register, rpc
from tests.servers import make_server

SMALL = Shape(messages=600, conversations=8, big=2, big_share=0.4, agents=10, reader_conversations=4, reader_big=1)


def test_the_hand_built_store_matches_what_the_hub_writes_and_reads(tmp_path: Path) -> None:
    server = make_server("asyncio", "sqlite", tmp_path)
    server.launch()
    try:
        reader = register(server, "history-reader")
    finally:
        assert server.stop() == 0
    assert server.sqlite_path is not None
    conversations, _ = build_store(server.sqlite_path, SMALL, reader)  # raises where a row differs

    biggest = max((conv for conv in conversations if reader.agent_id in conv.members), key=lambda conv: conv.count)
    server.launch()
    try:
        page = rpc(server, "messages.list", {"conversation_id": biggest.id, "limit": 5}, reader.api_key)
    finally:
        assert server.stop() == 0
    assert [message["seq"] for message in page["items"]] == list(range(biggest.count - 4, biggest.count + 1))
