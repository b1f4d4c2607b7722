"""Whether something is still anywhere in a hub's store: for the erasure tests."""

import anyio
import psycopg

from .servers import HubServer


async def stored(server: HubServer, needle: str) -> bool:
    """Whether `needle` is in the store: the SQLite files' bytes, or any PostgreSQL row as text (a `bytea`
    column shows as hex there, so the needle's hex counts too)."""
    if server.sqlite_path is not None:
        for path in (server.sqlite_path, server.sqlite_path.with_name(server.sqlite_path.name + "-wal")):
            if await anyio.Path(path).exists() and needle.encode() in await anyio.Path(path).read_bytes():
                return True
        return False

    def rows() -> bool:
        with psycopg.connect(server.database_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            tables = [row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            return any(
                conn.execute(f"SELECT 1 FROM {table} AS t WHERE t::text LIKE %s OR t::text LIKE %s LIMIT 1",  # noqa: S608
                             (f"%{needle}%", f"%{needle.encode().hex()}%")).fetchone()
                for table in tables
            )

    return await anyio.to_thread.run_sync(rows)
