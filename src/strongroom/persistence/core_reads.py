"""Core statements (table columns, no ORM entities) run on a unit of work's session."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import CursorResult, Executable
from sqlalchemy.orm import Session


def execute(session: Session, stmt: Executable, params: Mapping[str, Any]) -> CursorResult[Any]:
    """``stmt`` on the session's connection, in its transaction. ``Session.execute`` would
    also take it through the ORM's execution steps, which cost about as much as a
    one-row read on SQLite and do nothing for a statement that loads no entities; its
    autoflush is kept, so a read still sees the changes pending in the session."""
    session.flush()
    return session.connection().execute(stmt, params)
