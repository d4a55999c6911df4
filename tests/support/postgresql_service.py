"""Helpers for driving PostgreSQL through the service: directories the server's OS user
can reach, clean-up of servers left running, a writer whose every commit is numbered,
table contents and comparisons."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from fixtures.service import Harness, make_harness
from strongroom.engines.postgresql import PostgresEngine
from support.postgresql import TpcbWriter, cleanup_homes, servers_running_in
from support.service_calls import fault_message as fault_message
from support.service_calls import wait_status as wait_status

_info = PostgresEngine().detect()
PG_MAJOR: str | None = _info.version if _info is not None else None
WAIT = 120.0


@contextmanager
def reachable_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory under /tmp that the ``postgres`` OS user can traverse (pytest's
    own tmp_path cannot be); every server left running under it is stopped on exit."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(base, 0o711)
    try:
        yield base
    finally:
        cleanup_homes(base)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def postgresql_service(prefix: str, **settings: Any) -> Iterator[Harness]:
    """The service in-process with PostgreSQL as its datastore, its data dir where the
    managed servers' OS user can reach it; ``settings`` as for ``make_harness``."""
    settings.setdefault("datastores", ["postgresql"])
    settings.setdefault("engine_timeout", 120)
    with reachable_dir(prefix) as base:
        root = base / "service"
        root.mkdir(mode=0o711)
        harness = make_harness(root, **settings)
        try:
            yield harness
        finally:
            harness.container.close()


def server_processes(path: Path) -> list[str]:
    """Server processes (not this test's own) whose command line names ``path``."""
    return [cmd for cmd in servers_running_in(path) if "postgres" in cmd]


def tcp(connection: dict[str, Any], user: str, password: str, dbname: str) -> dict[str, Any]:
    """Connection parameters for a client reaching a server over TCP as ``user``."""
    return {
        "host": connection["host"],
        "port": int(connection["port"]),
        "user": user,
        "password": password,
        "dbname": dbname,
    }


def connect(params: dict[str, Any]) -> psycopg.Connection[Any]:
    return psycopg.connect(**params, autocommit=True, connect_timeout=10)


def as_plain(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` in the shape support.postgresql's snapshot/pgbench helpers take."""
    return {"managed": False, **params}


def tables(params: dict[str, Any]) -> list[str]:
    with connect(params) as c:
        return [
            r[0]
            for r in c.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]


def rows(params: dict[str, Any], table: str, order_by: str) -> list[tuple[Any, ...]]:
    with connect(params) as c:
        return list(
            c.execute(
                sql.SQL("SELECT * FROM {} ORDER BY {}").format(
                    sql.Identifier(table), sql.Identifier(order_by)
                )
            )
        )


LEDGER_DDL = (
    "CREATE TABLE ledger (id bigint PRIMARY KEY, aid int NOT NULL, tid int NOT NULL, "
    "bid int NOT NULL, delta int NOT NULL)"
)


class LedgerWriter(TpcbWriter):
    """Records each numbered transaction ``(n, aid, tid, bid, delta)`` in ``ledger``, so
    the state after commit ``n`` is the final state with the ledger entries above ``n``
    taken back out."""

    def __init__(self, params: dict[str, Any], scale: int) -> None:
        super().__init__(params, scale, seed=7)

    def record(
        self, c: psycopg.Connection[Any], n: int, aid: int, tid: int, bid: int, delta: int
    ) -> None:
        c.execute("INSERT INTO ledger VALUES (%s, %s, %s, %s, %s)", (n, aid, tid, bid, delta))


class LedgerState:
    """The tables the writer touches, read after it stopped, and what they held after
    any earlier commit."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.accounts = rows(params, "pgbench_accounts", "aid")
        self.tellers = rows(params, "pgbench_tellers", "tid")
        self.branches = rows(params, "pgbench_branches", "bid")
        self.ledger = rows(params, "ledger", "id")

    def as_of(self, commit: int) -> dict[str, list[tuple[Any, ...]]]:
        later = [entry for entry in self.ledger if entry[0] > commit]

        def undo(
            table: list[tuple[Any, ...]], key: Callable[[tuple[Any, ...]], int], col: int
        ) -> list[tuple[Any, ...]]:
            taken: dict[int, int] = {}
            for entry in later:
                taken[key(entry)] = taken.get(key(entry), 0) + entry[4]
            out = []
            for row in table:
                if row[0] in taken:
                    row = (*row[:col], row[col] - taken[row[0]], *row[col + 1 :])
                out.append(row)
            return out

        return {
            # pgbench_accounts(aid, bid, abalance, filler)
            "pgbench_accounts": undo(self.accounts, lambda e: e[1], 2),
            # pgbench_tellers(tid, bid, tbalance, filler)
            "pgbench_tellers": undo(self.tellers, lambda e: e[2], 2),
            # pgbench_branches(bid, bbalance, filler)
            "pgbench_branches": undo(self.branches, lambda e: e[3], 1),
            "ledger": [entry for entry in self.ledger if entry[0] <= commit],
        }
