"""A restored MariaDB server checked for a restore drill: ``CHECK TABLE … EXTENDED`` on
every base table (what ``mariadb-check --extended --all-databases`` runs, read here as
rows rather than parsed from text), then each user table's row count, the first
:data:`MAX_CHECKED_TABLES` of them.

The server, its schema and its data are the tenant's: names are quoted as identifiers
(backquotes doubled), counts are plain ``SELECT COUNT(*)`` (no trigger, view or routine
runs) bounded by ``max_statement_time``, and the session is the service's admin account
through the instance's socket.
"""

from __future__ import annotations

from typing import Any

import pymysql

from strongroom.engines.base import MAX_CHECKED_TABLES, Connection
from strongroom.engines.errors import CheckFailedError
from strongroom.engines.mariadb.sessions import managed_session, sql_error

STATEMENT_SECONDS = 600
REPORTED_PROBLEMS = 10
NOT_CHECKED = ("information_schema", "performance_schema", "sys")
NOT_COUNTED = (*NOT_CHECKED, "mysql")
# Statuses CHECK TABLE ends a sound table with.
SOUND = ("ok", "table is already up to date")


def check_restored(connection: Connection, *, timeout: float) -> dict[str, Any]:
    secrets = [str(connection.get("admin_password", ""))]
    try:
        with managed_session(connection, read_timeout=timeout) as cursor:
            cursor.execute(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
                "WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME"
            )
            tables = [
                (str(schema), str(name))
                for schema, name in cursor.fetchall()
                if str(schema) not in NOT_CHECKED
            ]
            problems = check_tables(cursor, tables)
            if problems:
                raise CheckFailedError(
                    "CHECK TABLE found problems: " + "; ".join(problems[:REPORTED_PROBLEMS])
                )
            counted = [t for t in tables if t[0] not in NOT_COUNTED]
            rows = count_rows(cursor, counted[:MAX_CHECKED_TABLES])
    except pymysql.MySQLError as exc:
        raise CheckFailedError(
            f"checking the restored server failed: {sql_error(exc, secrets)}"
        ) from None
    return {"checks": {"check_table_extended": "ok"}, "tables": len(counted), "rows": rows}


def check_tables(cursor: Any, tables: list[tuple[str, str]]) -> list[str]:
    """``db.table: message`` for each table CHECK TABLE did not find sound."""
    problems: list[str] = []
    for schema, name in tables:
        cursor.execute(f"CHECK TABLE {quote(schema)}.{quote(name)} EXTENDED")
        results = cursor.fetchall()
        errors = [str(r[3]) for r in results if str(r[2]).lower() == "error"]
        status = [str(r[3]).lower() for r in results if str(r[2]).lower() == "status"]
        # No status at all: an engine without CHECK (a note says so), nothing to check.
        if errors or (status and status[-1] not in SOUND):
            problems.append(f"{schema}.{name}: " + " / ".join(errors or status))
    return problems


def count_rows(cursor: Any, tables: list[tuple[str, str]]) -> dict[str, dict[str, int]]:
    cursor.execute(f"SET SESSION max_statement_time = {STATEMENT_SECONDS}")
    rows: dict[str, dict[str, int]] = {}
    for schema, name in tables:
        cursor.execute(f"SELECT COUNT(*) FROM {quote(schema)}.{quote(name)}")
        rows.setdefault(schema, {})[name] = int(cursor.fetchone()[0])
    return rows


def quote(identifier: str) -> str:
    """A name the tenant chose, as a backquoted identifier."""
    return "`" + identifier.replace("`", "``") + "`"
