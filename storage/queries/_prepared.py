"""Statements run straight on the connection's DBAPI cursor: those that run for every message sent or read,
and for every document added (which an ingestion beside a send load does thousands of times).

`Connection.execute` spends 25-40 µs of Python per statement before the database sees it (cache
lookup, execution context, parameter processing, result object), where SQLite then takes 2-4 µs;
a send runs about ten statements (bench/send.py), a `conversations.get` eight. A `Prepared` statement
is compiled once per engine (by its dialect, which carries the engine's JSON serializer) by SQLAlchemy
itself (the same SQL, the same bind and result processing: UTC datetimes, JSON), then executed on
the DBAPI cursor of the caller's connection, inside the caller's transaction or savepoint. Errors
are wrapped as `Connection.execute` wraps them (`sqlalchemy.exc.IntegrityError`…), and an error that
says the connection is lost invalidates it, as there.

Rows come back as plain tuples with no result processing (`first`, `all`, `column`: prepare for
those only statements whose columns need none: integers, strings), or as dicts by column key with
each column's result processing (`mapping`, `mappings`). An `IN` list (an expanding bind) is
compiled once per engine and length of list: the lists here are bounded by page sizes. Binds
rendered at execution time (`literal_execute`) are not supported. An `INSERT … ON CONFLICT` is
built with each dialect's own `insert`, so it is a `PreparedUpsert`: a `Prepared` per dialect.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import BindParameter, Connection, Dialect
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.dml import Insert, UpdateBase
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.selectable import SelectBase
from sqlalchemy.sql.visitors import iterate

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    fixed: dict[str, Any]
    """Values of the binds the statement carries itself (`last_seq + 1`)."""
    binds: tuple[tuple[str, Processor | None], ...]
    """Each bind's name and processor, in the order of a positional paramstyle."""
    positional: bool
    expanded: tuple[tuple[str, tuple[str, ...]], ...]
    """Each `IN` list's bind and the names of the binds its items went to, in order."""
    keys: tuple[str, ...]
    """The result columns' keys."""
    results: tuple[tuple[str, Processor], ...]
    """The result columns that have a processor, by key."""

    def arguments(self, params: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        """The DBAPI parameters for `params`, processed, in one pass over the binds."""
        values = {**self.fixed, **params} if self.fixed else params
        if self.expanded:
            values = {**values, **{name: item for source, names in self.expanded
                                   for name, item in zip(names, values[source], strict=True)}}
        if self.positional:
            return tuple([values[name] if process is None else process(values[name]) for name, process in self.binds])
        return {name: values[name] if process is None else process(values[name]) for name, process in self.binds}

    def mapping(self, row: Sequence[Any]) -> dict[str, Any]:
        """`row` by column key, each value through its column's result processor."""
        mapping = dict(zip(self.keys, row, strict=True))
        for key, process in self.results:
            mapping[key] = process(mapping[key])
        return mapping


class Prepared:
    """`statement`, compiled once per engine; `column_keys` are an INSERT's columns given."""

    def __init__(self, statement: Executable, *, column_keys: Sequence[str] | None = None) -> None:
        assert isinstance(statement, ClauseElement)
        self._statement = statement
        self._column_keys = list(column_keys) if column_keys is not None else None
        self._expanding = tuple(sorted({element.key for element in iterate(statement)
                                        if isinstance(element, BindParameter) and element.expanding}))
        self._compiled: WeakKeyDictionary[Dialect, dict[tuple[int, ...], _Compiled]] = WeakKeyDictionary()
        """By engine's dialect (its processors carry the engine's JSON serializer), then by lengths of lists."""

    def _for(self, dialect: Dialect, params: Mapping[str, Any]) -> _Compiled:
        lengths = tuple(len(params[name]) for name in self._expanding) if self._expanding else ()
        of_dialect = self._compiled.get(dialect)
        if of_dialect is None:
            of_dialect = self._compiled.setdefault(dialect, {})
        compiled = of_dialect.get(lengths)
        if compiled is None:
            compiled = of_dialect[lengths] = self._compile(dialect, lengths)
        return compiled

    def _compile(self, dialect: Dialect, lengths: tuple[int, ...]) -> _Compiled:
        compiled = self._statement.compile(dialect=dialect, column_keys=self._column_keys)
        assert not compiled.literal_execute_params, "no binds rendered at execution time in a prepared statement"
        processors = {name: bind.type.dialect_impl(dialect).bind_processor(dialect)
                      for name, bind in compiled.binds.items()}
        fixed = {name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
        sql, names, expanded = compiled.string, compiled.positiontup if dialect.positional else list(compiled.binds), ()
        if self._expanding:  # SQLAlchemy renders the list for these lengths, as it would at each execution
            state = compiled.construct_expanded_state(
                {**dict.fromkeys(compiled.binds), **{name: [None] * length
                                                     for name, length in zip(self._expanding, lengths, strict=True)}})
            sql, names = state.statement, state.positiontup if dialect.positional else list(state.parameters)
            expanded = tuple((source, tuple(items)) for source, items in state.parameter_expansion.items())
            processors.update((item, processors[source]) for source, items in expanded for item in items)
        assert "POSTCOMPILE" not in sql, "every IN list is rendered"
        binds = tuple((name, processors[name]) for name in names or ())
        return _Compiled(sql, fixed, binds, dialect.positional, expanded, *self._result_columns(dialect))

    def _result_columns(self, dialect: Dialect) -> tuple[tuple[str, ...], tuple[tuple[str, Processor], ...]]:
        """The keys of the statement's result columns (a SELECT's, or what a DML statement returns), and
        those of them with a result processor."""
        if isinstance(self._statement, SelectBase):
            columns = list(self._statement.selected_columns.items())
        elif isinstance(self._statement, UpdateBase):
            columns = list(self._statement.exported_columns.items())
        else:
            return (), ()
        keys = tuple(key for key, _ in columns)
        assert len(set(keys)) == len(keys), "a prepared statement's result columns have distinct keys"
        processors = [(key, column.type.dialect_impl(dialect).result_processor(dialect, None))
                      for key, column in columns]
        return keys, tuple((key, process) for key, process in processors if process is not None)

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Run the statement with `params` (by bind name); the DBAPI cursor, to fetch from."""
        return self._execute(conn, self._for(conn.dialect, params), params)

    @staticmethod
    def _execute(conn: Connection, compiled: _Compiled, params: Mapping[str, Any]) -> Any:
        arguments = compiled.arguments(params)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(compiled.sql, arguments)
        except conn.dialect.loaded_dbapi.Error as error:
            cursor.close()
            raise _wrapped(conn, compiled.sql, arguments, error) from error
        except BaseException:
            cursor.close()
            raise
        return cursor

    def execute_many(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        compiled = self._for(conn.dialect, {})  # no IN lists here
        arguments = [compiled.arguments(row) for row in rows]
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(compiled.sql, arguments)
        except conn.dialect.loaded_dbapi.Error as error:
            raise _wrapped(conn, compiled.sql, arguments, error) from error
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

    def mapping(self, conn: Connection, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row by column key, its values processed as `Connection.execute` would; None without rows."""
        compiled = self._for(conn.dialect, params)
        cursor = self._execute(conn, compiled, params)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return None if row is None else compiled.mapping(row)

    def mappings(self, conn: Connection, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every row by column key, its values processed as `Connection.execute` would."""
        compiled = self._for(conn.dialect, params)
        cursor = self._execute(conn, compiled, params)
        try:
            return [compiled.mapping(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

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


class PreparedUpsert:
    """An `INSERT … ON CONFLICT`, whose statement is each dialect's own (`postgresql.insert`,
    `sqlite.insert`): a `Prepared` for each, from `build(insert)`. `on(conn)` is the one to run."""

    def __init__(self, build: Callable[[Callable[..., Insert]], Executable], *,
                 column_keys: Sequence[str] | None = None) -> None:
        self._by_dialect = {name: Prepared(build(insert), column_keys=column_keys)
                            for name, insert in (("postgresql", postgresql_insert), ("sqlite", sqlite_insert))}

    def on(self, conn: Connection) -> Prepared:
        return self._by_dialect[conn.dialect.name]


def _wrapped(conn: Connection, sql: str, arguments: Any, error: Exception) -> BaseException:
    """The DBAPI error as `Connection.execute` raises it (IntegrityError, OperationalError…), the
    connection invalidated as it would be when the error says the connection is lost: the writer's
    batch then runs again on a new one (a PostgreSQL restart, an idle timeout)."""
    dialect = conn.dialect
    lost = dialect.is_disconnect(error, conn.connection.dbapi_connection, None)
    wrapped = DBAPIError.instance(sql, arguments, error, dialect.loaded_dbapi.Error, dialect=dialect,
                                  connection_invalidated=lost)
    if lost:
        conn.invalidate(wrapped)
    return wrapped
