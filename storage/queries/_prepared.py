"""Statements run straight on the connection's DBAPI cursor: the few that run for every message sent.

`Connection.execute` spends 15-20 µs of Python per statement before the database sees it (cache
lookup, execution context, parameter processing, result object), where SQLite then takes 2-4 µs;
a send runs about ten statements (bench/send.py). A `Prepared` statement is compiled once per
dialect by SQLAlchemy itself (the same SQL, the same bind processing: UTC datetimes, JSON), then
executed on the DBAPI cursor of the caller's connection, inside the caller's transaction or
savepoint. Errors are wrapped as `Connection.execute` wraps them (`sqlalchemy.exc.IntegrityError`…).

Rows come back as plain tuples, with no result processing: prepare only statements whose result
columns need none (integers, strings), and bind parameters that are neither expanding (`IN`) nor
rendered at execution time.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement


@dataclass(frozen=True)
class _Compiled:
    sql: str
    fixed: dict[str, Any]
    """Values of the binds the statement carries itself (`last_seq + 1`)."""
    binds: tuple[tuple[str, Callable[[Any], Any] | None], ...]
    """Each bind's name and processor, in the order of a positional paramstyle."""
    positional: bool

    def arguments(self, params: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        """The DBAPI parameters for `params`, processed, in one pass over the binds."""
        values = {**self.fixed, **params} if self.fixed else params
        if self.positional:
            return tuple([values[name] if process is None else process(values[name]) for name, process in self.binds])
        return {name: values[name] if process is None else process(values[name]) for name, process in self.binds}


class Prepared:
    """`statement`, compiled once per dialect; `column_keys` are an INSERT's columns given."""

    def __init__(self, statement: Executable, *, column_keys: Sequence[str] | None = None) -> None:
        assert isinstance(statement, ClauseElement)
        self._statement = statement
        self._column_keys = list(column_keys) if column_keys is not None else None
        self._compiled: dict[tuple[str, str], _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        key = (dialect.name, dialect.driver)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._compile(dialect)
        return compiled

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self._statement.compile(dialect=dialect, column_keys=self._column_keys)
        assert "POSTCOMPILE" not in compiled.string, "no expanding or render-time binds in a prepared statement"
        fixed = {name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
        names = compiled.positiontup if dialect.positional else list(compiled.binds)
        binds = tuple((name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
                      for name in names or ())
        return _Compiled(compiled.string, fixed, binds, dialect.positional)

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Run the statement with `params` (by bind name); the DBAPI cursor, to fetch from."""
        compiled = self._for(conn.dialect)
        arguments = compiled.arguments(params)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(compiled.sql, arguments)
        except conn.dialect.loaded_dbapi.Error as error:
            cursor.close()
            raise _wrapped(conn.dialect, compiled.sql, arguments, error) from error
        return cursor

    def execute_many(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        compiled = self._for(conn.dialect)
        arguments = [compiled.arguments(row) for row in rows]
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(compiled.sql, arguments)
        except conn.dialect.loaded_dbapi.Error as error:
            raise _wrapped(conn.dialect, compiled.sql, arguments, error) from error
        finally:
            cursor.close()

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first column of the first row, None without rows."""
        cursor = self.execute(conn, params)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else row[0]

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        cursor = self.execute(conn, params)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else tuple(row)

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row, as a plain tuple."""
        cursor = self.execute(conn, params)
        try:
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def column(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """The first column of every row."""
        cursor = self.execute(conn, params)
        try:
            return [row[0] for row in cursor.fetchall()]
        finally:
            cursor.close()

    def rowcount(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """How many rows the (UPDATE, DELETE) statement matched."""
        cursor = self.execute(conn, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()


def _wrapped(dialect: Dialect, sql: str, arguments: Any, error: Exception) -> BaseException:
    """The DBAPI error as `Connection.execute` raises it (IntegrityError, OperationalError…)."""
    return DBAPIError.instance(sql, arguments, error, dialect.loaded_dbapi.Error, dialect=dialect)
