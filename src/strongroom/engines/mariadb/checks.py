"""A restored MariaDB server checked for a restore drill: ``CHECK TABLE … EXTENDED`` on
every base table (what ``mariadb-check --extended --all-databases`` runs, read here as
rows rather than parsed from text), then each user table's row count, the first
:data:`MAX_CHECKED_TABLES` of them.

Everything ends within ``timeout`` (what is left of the drill's budget, capped by the
engine's timeout): the client cuts a statement that
outlasts it, since a CHECK TABLE the server interrupts (``max_statement_time``) reports
``OK``. A lock waits at most :data:`LOCK_WAIT_SECONDS`. A count that takes over
:data:`COUNT_STATEMENT_SECONDS`, waits that long for a lock, or is not reached within
:data:`COUNT_BUDGET_SECONDS` of counting is skipped: the report's ``skipped`` says how many,
``skipped_tables`` which and why.

The server, its schema and its data are the tenant's: names are quoted as identifiers
(backquotes doubled), counts are plain ``SELECT COUNT(*)`` (no trigger, view or routine
runs), and the session is the service's admin account through the instance's socket.
"""

from __future__ import annotations

import time
from typing import Any

import pymysql

from strongroom.engines.base import MAX_CHECKED_TABLES, Connection
from strongroom.engines.errors import CheckFailedError
from strongroom.engines.mariadb.sessions import managed_session, sql_error

# A tenant's table may take as long as it likes to count (a FEDERATED table whose server
# never answers, a huge table): one count, and all of them, end by these.
COUNT_STATEMENT_SECONDS = 10.0
COUNT_BUDGET_SECONDS = 300.0
LOCK_WAIT_SECONDS = 5  # below a count's limit: a held lock is reported as such
# A count's reply may come this much later than its max_statement_time before the cut.
CUT_MARGIN_SECONDS = 5.0
ER_LOCK_WAIT_TIMEOUT = 1205
ER_STATEMENT_TIMEOUT = 1969
REPORTED_PROBLEMS = 10
NOT_CHECKED = ("information_schema", "performance_schema", "sys")
NOT_COUNTED = (*NOT_CHECKED, "mysql")
# Statuses CHECK TABLE ends a sound table with.
SOUND = ("ok", "table is already up to date")


def check_restored(connection: Connection, *, timeout: float) -> dict[str, Any]:
    secrets = [str(connection.get("admin_password", ""))]
    until = time.monotonic() + timeout
    try:
        with managed_session(
            connection, read_timeout=max(1.0, timeout), deadline=max(1.0, timeout)
        ) as cursor:
            cursor.execute(
                f"SET SESSION lock_wait_timeout = {LOCK_WAIT_SECONDS}, "
                f"innodb_lock_wait_timeout = {LOCK_WAIT_SECONDS}"
            )
            answer_by(cursor, until)
            cursor.execute(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
                "WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME"
            )
            tables = [
                (str(schema), str(name))
                for schema, name in cursor.fetchall()
                if str(schema) not in NOT_CHECKED
            ]
            problems = check_tables(cursor, tables, until=until)
            if problems:
                raise CheckFailedError(
                    "CHECK TABLE found problems: " + "; ".join(problems[:REPORTED_PROBLEMS])
                )
            counted = [t for t in tables if t[0] not in NOT_COUNTED]
            rows, skipped = count_rows(cursor, counted[:MAX_CHECKED_TABLES], until=until)
    except pymysql.MySQLError as exc:
        raise CheckFailedError(
            f"checking the restored server failed: {sql_error(exc, secrets)}"
        ) from None
    report: dict[str, Any] = {
        "checks": {"check_table_extended": "ok"},
        "tables": len(counted),
        "rows": rows,
    }
    how_many = sum(len(t) for t in skipped.values())
    if how_many:
        report.update(skipped=how_many, skipped_tables=skipped)
    return report


def answer_by(cursor: Any, until: float) -> None:
    """The next statement's reply comes by ``until`` or the connection is cut."""
    left = until - time.monotonic()
    if left <= 0:
        raise CheckFailedError("no time was left to check every table")
    cursor.connection.deadline = left


def check_tables(cursor: Any, tables: list[tuple[str, str]], *, until: float) -> list[str]:
    """``db.table: message`` for each table CHECK TABLE did not find sound."""
    problems: list[str] = []
    for schema, name in tables:
        answer_by(cursor, until)
        cursor.execute(f"CHECK TABLE {quote(schema)}.{quote(name)} EXTENDED")
        results = cursor.fetchall()
        errors = [str(r[3]) for r in results if str(r[2]).lower() == "error"]
        status = [str(r[3]).lower() for r in results if str(r[2]).lower() == "status"]
        # No status at all: an engine without CHECK (a note says so), nothing to check.
        if errors or (status and status[-1] not in SOUND):
            problems.append(f"{schema}.{name}: " + " / ".join(errors or status))
    return problems


def count_rows(
    cursor: Any, tables: list[tuple[str, str]], *, until: float
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, str]]]:
    """``{db: {table: rows}}`` for the tables counted, and ``{db: {table: why}}`` for
    those skipped, while counting has time left (:data:`COUNT_BUDGET_SECONDS`, and none
    past ``until``)."""
    ends = min(until, time.monotonic() + COUNT_BUDGET_SECONDS)
    rows: dict[str, dict[str, int]] = {}
    skipped: dict[str, dict[str, str]] = {}
    for schema, name in tables:
        counted = count_one(cursor, schema, name, ends=ends)
        if isinstance(counted, str):
            skipped.setdefault(schema, {})[name] = counted
        else:
            rows.setdefault(schema, {})[name] = counted
    return rows, skipped


def count_one(cursor: Any, schema: str, name: str, *, ends: float) -> int | str:
    """The table's rows; or, when its count was not run or was cancelled, why."""
    left = ends - time.monotonic()
    if left <= 0:
        return "not counted: no time was left for counting"
    seconds = min(COUNT_STATEMENT_SECONDS, left)
    cursor.connection.deadline = seconds + CUT_MARGIN_SECONDS
    cursor.execute(f"SET SESSION max_statement_time = {max(0.001, seconds):.3f}")
    try:
        cursor.execute(f"SELECT COUNT(*) FROM {quote(schema)}.{quote(name)}")
    except pymysql.MySQLError as exc:
        code = exc.args[0] if exc.args else None
        if code == ER_STATEMENT_TIMEOUT:
            return f"not counted: its count took over {seconds:.3g} s"
        if code == ER_LOCK_WAIT_TIMEOUT:
            return f"not counted: a lock on it was not granted within {LOCK_WAIT_SECONDS} s"
        raise
    return int(cursor.fetchone()[0])


def quote(identifier: str) -> str:
    """A name the tenant chose, as a backquoted identifier."""
    return "`" + identifier.replace("`", "``") + "`"
