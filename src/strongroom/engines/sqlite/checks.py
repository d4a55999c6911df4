"""A restored SQLite file checked for a restore drill: ``PRAGMA integrity_check``, then
each table's row count. The schema is the tenant's, so nothing in it is trusted: the file
is opened read-only with ``trusted_schema`` off, and table names are quoted."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from strongroom.engines.base import MAX_CHECKED_TABLES
from strongroom.engines.errors import CheckFailedError

REPORTED_PROBLEMS = 10


def check_restored(home: Path, path: Path) -> dict[str, Any]:
    resolved = path.resolve()
    if not resolved.is_relative_to(home.resolve()):
        raise CheckFailedError("the restored database is not inside its instance's directory")
    try:
        db = sqlite3.connect(f"{resolved.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise CheckFailedError(f"the restored database cannot be opened: {exc}") from exc
    try:
        db.execute("PRAGMA trusted_schema = OFF")
        check = [str(r[0]) for r in db.execute("PRAGMA integrity_check")]
        if check != ["ok"]:
            raise CheckFailedError("integrity_check: " + "; ".join(check[:REPORTED_PROBLEMS]))
        names = [
            str(r[0])
            for r in db.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name"
            )
        ]
        rows = {
            name: int(db.execute(count_rows(name)).fetchone()[0])
            for name in names[:MAX_CHECKED_TABLES]
        }
    except sqlite3.Error as exc:
        raise CheckFailedError(f"the restored database could not be read: {exc}") from exc
    finally:
        db.close()
    return {"checks": {"integrity_check": "ok"}, "tables": len(names), "rows": rows}


def count_rows(table: str) -> str:
    """``SELECT count(*)`` of a table whose name the tenant chose, quoted as SQL says."""
    quoted = table.replace('"', '""')
    return f'SELECT count(*) FROM "{quoted}"'
