"""Incremental MariaDB backups hold what changed, not the redo log since an old checkpoint.

A managed server holds a table of about 100 MB. After a full backup, an incremental with no
change must be under 5 % of the full, and one after changing 1 % of the table's rows (a
contiguous range of ids, as recent rows are) under 15 %. Both chains are restored and
compared row for row with the source as it was when their last link was taken.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors
import pytest

from strongroom.engines.base import DatabaseSpec, InstanceRequest, RestoreInput, UserSpec
from strongroom.engines.mariadb import MariaDbEngine
from support.mariadb import require_mariadb, scratch_root

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROWS = 100_000
PAD = 900  # bytes a row: about 100 MB of table with its pages' slack
CHANGED = ROWS // 100
QUIET_LIMIT = 0.05
CHANGED_LIMIT = 0.15


class FileSink:
    def __init__(self, path: Path) -> None:
        self.handle = path.open("wb")

    def write(self, data: bytes, /) -> int:
        return self.handle.write(data)


@contextlib.contextmanager
def admin(conn: dict[str, Any], *, streaming: bool = False) -> Iterator[Any]:
    db = pymysql.connect(
        unix_socket=conn["socket"],
        user=conn["admin_user"],
        password=conn["admin_password"],
        autocommit=True,
        cursorclass=pymysql.cursors.SSCursor if streaming else pymysql.cursors.Cursor,
    )
    try:
        with db.cursor() as cur:
            yield cur
    finally:
        db.close()


def rows_of(conn: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    with admin(conn, streaming=True) as cur:
        cur.execute("SELECT id, pad, n FROM app.big ORDER BY id")
        yield from cur
    with admin(conn, streaming=True) as cur:
        cur.execute("SELECT id, note FROM app.small ORDER BY id")
        yield from cur


def assert_same_rows(expected: list[tuple[Any, ...]], restored: dict[str, Any]) -> None:
    count = 0
    for want, got in itertools.zip_longest(expected, rows_of(restored)):
        assert got == want, f"row {count} differs"
        count += 1
    assert count == ROWS + 3


@pytest.fixture(scope="module")
def engine() -> MariaDbEngine:
    return require_mariadb()


@pytest.fixture(scope="module")
def base(engine: MariaDbEngine) -> Iterator[Path]:
    with scratch_root("sr-mdb-incr-") as path:
        yield path


def test_incrementals_hold_only_what_changed(engine: MariaDbEngine, base: Path) -> None:
    instances: list[tuple[Path, dict[str, Any]]] = []
    try:
        home = base / "source"
        request = InstanceRequest(
            "source", (DatabaseSpec("app"),), (UserSpec("alice", "alice-Pw-5", ("app",)),)
        )
        source = engine.create_instance(home, request)
        instances.append((home, source))
        with admin(source) as cur:
            cur.execute(
                "CREATE TABLE app.big (id INT PRIMARY KEY, pad VARCHAR(1000) NOT NULL, "
                "n INT NOT NULL) ENGINE=InnoDB"
            )
            cur.execute(
                f"INSERT INTO app.big SELECT seq, CONCAT(REPEAT(CHAR(97 + seq % 26), {PAD}), "
                f"seq), 0 FROM app.seq_1_to_{ROWS}"
            )
            cur.execute("CREATE TABLE app.small (id INT PRIMARY KEY, note TEXT) ENGINE=InnoDB")
            cur.execute("INSERT INTO app.small VALUES (1, 'a'), (2, 'b'), (3, 'c')")

        def backup(name: str, parent: dict[str, Any] | None) -> tuple[dict[str, Any], Path]:
            path = base / f"{name}.xb"
            sink = FileSink(path)
            try:
                result = engine.backup(source, sink, parent=parent)
            finally:
                sink.handle.close()
            return result.metadata, path

        full, full_path = backup("full", None)
        quiet, quiet_path = backup("quiet", full)
        as_of_quiet = list(rows_of(source))
        with admin(source) as cur:
            low = ROWS // 2
            cur.execute(
                "UPDATE app.big SET n = n + 1, pad = CONCAT('changed ', pad) "
                "WHERE id BETWEEN %s AND %s",
                (low, low + CHANGED - 1),
            )
            assert cur.rowcount == CHANGED
            cur.execute("UPDATE app.small SET note = 'changed' WHERE id = 2")
        changed, changed_path = backup("changed", quiet)
        as_of_changed = list(rows_of(source))

        sizes = {p.stem: p.stat().st_size for p in (full_path, quiet_path, changed_path)}
        print(f"\nbackup sizes (MB): { {k: round(v / 1e6, 2) for k, v in sizes.items()} }")
        assert sizes["full"] > 90_000_000  # the table really is about 100 MB
        assert sizes["quiet"] < QUIET_LIMIT * sizes["full"], sizes
        assert sizes["changed"] < CHANGED_LIMIT * sizes["full"], sizes

        for name, chain, expected in (
            ("quiet", [(full, full_path), (quiet, quiet_path)], as_of_quiet),
            (
                "changed",
                [(full, full_path), (quiet, quiet_path), (changed, changed_path)],
                as_of_changed,
            ),
        ):
            with contextlib.ExitStack() as files:
                links = [
                    RestoreInput(meta, files.enter_context(path.open("rb"))) for meta, path in chain
                ]
                home = base / f"restored-{name}"
                restored = engine.restore_instance(home, links, InstanceRequest(name))
            instances.append((home, restored))
            assert_same_rows(expected, restored)
        assert as_of_quiet != as_of_changed
    finally:
        for home, conn in reversed(instances):
            with contextlib.suppress(Exception):
                engine.destroy_instance(home, conn)
