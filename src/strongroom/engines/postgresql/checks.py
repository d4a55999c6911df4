"""A restored PostgreSQL server checked for a restore drill.

``pg_amcheck`` checks every database that accepts connections: each table's heap
(``verify_heapam``) and each B-tree index, including that every heap tuple is in its
indexes (``--heapallindexed``); ``--install-missing`` creates the ``amcheck`` extension
where it is missing. Then each user table's rows are counted, the first
:data:`MAX_CHECKED_TABLES` of them.

Everything ends within ``timeout`` (what is left of the drill's budget, capped by the
engine's timeout). A lock held by a prepared
transaction restored with the data waits at most :data:`LOCK_TIMEOUT_MS`, pg_amcheck's
too. A count that takes over :data:`COUNT_STATEMENT_TIMEOUT_S`, waits that long for a
lock, or is not reached within :data:`COUNT_BUDGET_S` of counting is skipped: the
report's ``skipped`` says how many, ``skipped_tables`` which and why.

The server, its schema and its data are the tenant's: names are quoted as identifiers,
every statement runs read-only with ``search_path`` set to ``pg_catalog`` and a statement
timeout. The client tools run as the service's user (not the instance's, which could read
their environment) and get the superuser's password through ``PGPASSWORD``, never argv.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import attrs
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from strongroom.engines import process
from strongroom.engines.base import MAX_CHECKED_TABLES, Connection
from strongroom.engines.errors import CheckFailedError
from strongroom.engines.postgresql import session

# A tenant's table may take as long as it likes to count (a foreign partition running a
# program, a huge table): one count, and all of them, end by these.
COUNT_STATEMENT_TIMEOUT_S = 10.0
COUNT_BUDGET_S = 300.0
LOCK_TIMEOUT_MS = 5_000  # below a count's limit: a held lock is reported as such
# The client cuts a session whose server ignores its statement timeout this much later.
CUT_MARGIN_S = 5.0
REPORTED_LINES = 12
AMCHECK_JOBS = 2

# Tables and partitioned tables (not each partition: its parent counts its rows), outside
# the catalogs and temporary schemas.
USER_TABLES = """
SELECT n.nspname, c.relname
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
ORDER BY n.nspname, c.relname
LIMIT %s
"""


@attrs.define
class Counts:
    """``rows``: ``{database: {"schema.table": rows}}`` for the first tables (by database,
    schema, name); ``skipped``: the same shape, why a table's rows are not there;
    ``total``: how many tables there are in all."""

    rows: dict[str, dict[str, int]] = attrs.Factory(dict)
    skipped: dict[str, dict[str, str]] = attrs.Factory(dict)
    total: int = 0


def check_restored(bin_dir: Path, connection: Connection, *, timeout: float) -> dict[str, Any]:
    password = connection.get("password")
    until = time.monotonic() + timeout
    run_amcheck(bin_dir, connection, timeout=max(0.0, until - time.monotonic()))
    try:
        counts = count_rows(connection, until=until)
    except psycopg.Error as exc:
        reason = session.scrub(session.pg_error(exc), password)
        raise CheckFailedError(f"counting rows failed: {reason}") from exc
    report: dict[str, Any] = {
        "checks": {"pg_amcheck": "ok"},
        "tables": counts.total,
        "rows": counts.rows,
    }
    skipped = sum(len(t) for t in counts.skipped.values())
    if skipped:
        report.update(skipped=skipped, skipped_tables=counts.skipped)
    return report


def run_amcheck(bin_dir: Path, connection: Connection, *, timeout: float) -> None:
    env = session.tool_env(connection)
    env["PGOPTIONS"] = f"-c lock_timeout={LOCK_TIMEOUT_MS}"
    argv: list[str | os.PathLike[str]] = [
        bin_dir / "pg_amcheck",
        "--all",
        "--install-missing",
        "--heapallindexed",
        f"--jobs={AMCHECK_JOBS}",
        "--no-password",
    ]
    result = process.run(argv, env=process.minimal_env(env), timeout=timeout, check=False)
    if result.returncode != 0:
        out = result.stdout.decode("utf-8", "replace").strip().splitlines()
        err = result.stderr.strip().splitlines()
        lines = [line for line in (*out, *err) if line.strip()][:REPORTED_LINES]
        detail = session.scrub("\n".join(lines), connection.get("password"))
        raise CheckFailedError(
            f"pg_amcheck found problems (exit status {result.returncode}): {detail}"
        )


def count_rows(connection: Connection, *, until: float) -> Counts:
    """Each database's tables listed, and the first :data:`MAX_CHECKED_TABLES` counted
    while counting has time left (:data:`COUNT_BUDGET_S`, and none past ``until``)."""
    counting_ends = min(until, time.monotonic() + COUNT_BUDGET_S)
    cut_after = COUNT_STATEMENT_TIMEOUT_S + CUT_MARGIN_S
    with session.connect(connection, deadline=cut_after) as conn:
        read_only(conn, COUNT_STATEMENT_TIMEOUT_S)
        databases = [
            str(r[0])
            for r in conn.execute(
                "SELECT datname FROM pg_catalog.pg_database "
                "WHERE datallowconn AND NOT datistemplate ORDER BY datname"
            )
        ]
    counts = Counts()
    room = MAX_CHECKED_TABLES
    for database in databases:
        if time.monotonic() >= until:
            raise CheckFailedError("no time was left to count every database's rows")
        with session.connect(connection, dbname=database, deadline=cut_after) as conn:
            read_only(conn, COUNT_STATEMENT_TIMEOUT_S)
            found = conn.execute(USER_TABLES, (MAX_CHECKED_TABLES + 1,)).fetchall()
            counts.total += len(found)
            counted = counts.rows.setdefault(database, {})
            for schema, table in found[:room]:
                rows = count_one(conn, str(schema), str(table), ends=counting_ends)
                if isinstance(rows, str):
                    counts.skipped.setdefault(database, {})[f"{schema}.{table}"] = rows
                else:
                    counted[f"{schema}.{table}"] = rows
            room = max(0, room - len(found))
    return counts


def count_one(conn: psycopg.Connection[Any], schema: str, table: str, *, ends: float) -> int | str:
    """The table's rows; or, when its count was not run or was cancelled, why."""
    left = ends - time.monotonic()
    if left <= 0:
        return "not counted: no time was left for counting"
    seconds = min(COUNT_STATEMENT_TIMEOUT_S, left)
    conn.execute(f"SET statement_timeout = {max(1, int(seconds * 1000))}")
    query = sql.SQL("SELECT count(*) FROM {}.{}").format(
        sql.Identifier(schema), sql.Identifier(table)
    )
    try:
        row = conn.execute(query).fetchone()
    except pg_errors.LockNotAvailable:
        return f"not counted: a lock on it was not granted within {LOCK_TIMEOUT_MS // 1000} s"
    except pg_errors.QueryCanceled:
        return f"not counted: its count took over {seconds:.3g} s"
    return int(row[0]) if row else 0


def read_only(conn: psycopg.Connection[Any], statement_seconds: float) -> None:
    """A session that changes nothing and resolves every name in the catalog first."""
    conn.execute("SET default_transaction_read_only = on")
    conn.execute("SET search_path = pg_catalog")
    conn.execute(f"SET statement_timeout = {int(statement_seconds * 1000)}")
    conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
