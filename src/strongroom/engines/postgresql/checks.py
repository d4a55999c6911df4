"""A restored PostgreSQL server checked for a restore drill.

``pg_amcheck`` checks every database that accepts connections: each table's heap
(``verify_heapam``) and each B-tree index, including that every heap tuple is in its
indexes (``--heapallindexed``); ``--install-missing`` creates the ``amcheck`` extension
where it is missing. Then each user table's rows are counted, the first
:data:`MAX_CHECKED_TABLES` of them.

The server, its schema and its data are the tenant's: names are quoted as identifiers,
every statement runs read-only with ``search_path`` set to ``pg_catalog`` and a statement
timeout. The client tools run as the service's user (not the instance's, which could read
their environment) and get the superuser's password through ``PGPASSWORD``, never argv.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from strongroom.engines import process
from strongroom.engines.base import MAX_CHECKED_TABLES, Connection
from strongroom.engines.errors import CheckFailedError
from strongroom.engines.postgresql import session

STATEMENT_TIMEOUT_MS = 600_000
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


def check_restored(bin_dir: Path, connection: Connection, *, timeout: float) -> dict[str, Any]:
    password = connection.get("password")
    run_amcheck(bin_dir, connection, timeout=timeout)
    try:
        rows, tables = count_rows(connection)
    except psycopg.Error as exc:
        reason = session.scrub(session.pg_error(exc), password)
        raise CheckFailedError(f"counting rows failed: {reason}") from exc
    return {"checks": {"pg_amcheck": "ok"}, "tables": tables, "rows": rows}


def run_amcheck(bin_dir: Path, connection: Connection, *, timeout: float) -> None:
    env = session.tool_env(connection)
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


def count_rows(connection: Connection) -> tuple[dict[str, dict[str, int]], int]:
    """``{database: {"schema.table": rows}}`` for the first tables (by database, schema,
    name), and how many tables there are in all."""
    with session.connect(connection) as conn:
        databases = [
            str(r[0])
            for r in conn.execute(
                "SELECT datname FROM pg_catalog.pg_database "
                "WHERE datallowconn AND NOT datistemplate ORDER BY datname"
            )
        ]
    rows: dict[str, dict[str, int]] = {}
    total = 0
    for database in databases:
        with session.connect(connection, dbname=database) as conn:
            read_only(conn)
            found = conn.execute(USER_TABLES, (MAX_CHECKED_TABLES + 1,)).fetchall()
            total += len(found)
            room = max(0, MAX_CHECKED_TABLES - sum(len(t) for t in rows.values()))
            counted: dict[str, int] = {}
            for schema, table in found[:room]:
                query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
                row = conn.execute(query).fetchone()
                counted[f"{schema}.{table}"] = int(row[0]) if row else 0
            rows[database] = counted
    return rows, total


def read_only(conn: psycopg.Connection[Any]) -> None:
    """A session that changes nothing and resolves every name in the catalog first."""
    conn.execute("SET default_transaction_read_only = on")
    conn.execute("SET search_path = pg_catalog")
    conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    conn.execute("SET lock_timeout = 10000")
