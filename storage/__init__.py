"""Persistence: the schema, migrations, the group-committing writer and every SQL query.

SQLAlchemy Core on a synchronous engine, driven from anyio through worker threads. No business
rule lives here: a query function does what its name says and nothing more.
"""
