"""Core statements (table columns, no ORM entities) run on a unit of work's session."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, CursorResult, Executable
from sqlalchemy.orm import Session

# In Session.info of a read-only unit of work's session: the connection it reads on.
READ_CONNECTION = "strongroom.read_connection"


def execute(session: Session, stmt: Executable, params: Mapping[str, Any]) -> CursorResult[Any]:
    """``stmt`` on the session's connection, in its transaction. ``Session.execute`` would
    also take it through the ORM's execution steps, which cost about as much as a
    one-row read on SQLite and do nothing for a statement that loads no entities; its
    autoflush is kept, so a read still sees the changes pending in the session.

    A read-only unit of work's session holds nothing to flush (it refuses to write), and
    its statements go straight to the connection it was opened on: the session's
    transaction bookkeeping around each read cost a fifth of a one-backup request."""
    connection: Connection | None = session.info.get(READ_CONNECTION)
    if connection is not None:
        return connection.execute(stmt, params)
    session.flush()
    return session.connection().execute(stmt, params)
