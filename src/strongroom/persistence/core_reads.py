"""Core statements (table columns, no ORM entities) run on a unit of work's session.

On SQLite, the embedded metadata, the reads the API serves most are run on the driver's
cursor: a one-row read costs SQLAlchemy's execution steps (cache key, parameters, result
set-up) several times the read itself. The statement is compiled once by SQLAlchemy, and
the values read are converted by the same type processors SQLAlchemy would apply, so the
rows are the same. On the database servers the round trip costs more than those steps,
and their drivers report column types that the processors need: SQLAlchemy runs them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select
from sqlalchemy.orm import Session

Processor = Callable[[Any], Any]


def rows(session: Session, stmt: Select[Any], params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
    """The rows of ``stmt`` (a statement built once, as the repositories' cached ones are),
    each a sequence of its selected columns' values, on the session's connection, in its
    transaction. ``Session.execute`` would also take the statement through the ORM's
    execution steps, which do nothing for one that loads no entities; its autoflush is
    kept, so a read still sees the changes pending in the session."""
    session.flush()
    conn = session.connection()
    prepared = _prepared(stmt, conn)
    if prepared is None:
        return list(conn.execute(stmt, params))
    return prepared.run(conn, params, stmt)


@dataclass(frozen=True)
class _Prepared:
    sql: str
    names: tuple[str, ...]  # the parameters, in their places (SQLite's are positional)
    values: Mapping[str, Any]  # values bound in the statement itself (literals)
    binds: tuple[tuple[str, Processor], ...]
    converters: tuple[tuple[int, Processor], ...]  # column index, result processor

    def run(
        self, conn: Connection, params: Mapping[str, Any], stmt: Select[Any]
    ) -> Sequence[Sequence[Any]]:
        values = {**self.values, **params}
        for name, process in self.binds:
            values[name] = process(values[name])
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(self.sql, tuple(values[name] for name in self.names))
            fetched: Sequence[Sequence[Any]] = cursor.fetchall()
        except conn.dialect.loaded_dbapi.Error:
            # SQLAlchemy's own run: its error (wrapped, the connection invalidated when
            # lost) rather than the driver's.
            return list(conn.execute(stmt, params))
        finally:
            cursor.close()
        if not self.converters:
            return fetched
        converted: list[Sequence[Any]] = []
        for row in fetched:
            values_of_row = list(row)
            for index, process in self.converters:
                values_of_row[index] = process(values_of_row[index])
            converted.append(values_of_row)
        return converted


# Keyed by statement: the repositories pass only statements they built once (a few dozen).
_PREPARED: dict[int, tuple[Select[Any], _Prepared | None]] = {}
_LOCK = threading.Lock()
MAX_PREPARED = 256


def _prepared(stmt: Select[Any], conn: Connection) -> _Prepared | None:
    """How the cursor runs ``stmt`` on this connection, or None when SQLAlchemy runs it."""
    if conn.dialect.name != "sqlite":
        return None
    entry = _PREPARED.get(id(stmt))
    if entry is not None and entry[0] is stmt:
        return entry[1]
    prepared = _prepare(stmt, conn)
    with _LOCK:
        if len(_PREPARED) >= MAX_PREPARED:
            _PREPARED.clear()
        _PREPARED[id(stmt)] = (stmt, prepared)  # the statement held: its id stays its own
    return prepared


def _prepare(stmt: Select[Any], conn: Connection) -> _Prepared | None:
    """``stmt`` compiled for this connection's dialect, or None when SQLAlchemy must run it
    (a list of values expanded at execution, placeholders that are not positional)."""
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect)
    if compiled.positiontup is None or any(b.expanding for b in compiled.binds.values()):
        return None
    binds = []
    for name, bind in compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            binds.append((name, process))
    converters = []
    for index, column in enumerate(stmt.selected_columns):
        # SQLite's cursor describes no column types: SQLAlchemy asks with None as well.
        process = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if process is not None:
            converters.append((index, process))
    return _Prepared(
        sql=str(compiled),
        names=tuple(compiled.positiontup),
        values={name: b.effective_value for name, b in compiled.binds.items() if not b.required},
        binds=tuple(binds),
        converters=tuple(converters),
    )
