"""One contract suite, run against every engine (see strongroom.engines.base) on real
servers: SQLite files, PostgreSQL and MariaDB servers the engines create themselves.

What every engine shares: a full backup restores to the same rows; an incremental chain
restores to the rows of its last link; a tampered or cut stream, full or incremental, is
refused and leaves nothing behind; a restore given less time than it takes fails at it
and leaves nothing behind; the metadata an engine writes loads as its typed model
and passes its own ``check_restorable``. What only one engine does stays in
tests/integration/engines/ (journal modes, WAL windows, binlog positions, allow-lists).

Each engine's source is created once per module with a small table; each test changes it
through plain SQL all three dialects accept.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pymysql
import pytest

from strongroom.engines import models
from strongroom.engines.base import (
    Connection,
    DatabaseSpec,
    Engine,
    InstanceRequest,
    Metadata,
    RestoreInput,
)
from strongroom.engines.errors import RestoreError
from strongroom.engines.mariadb import MariaDbEngine
from strongroom.engines.postgresql import PostgresEngine
from strongroom.engines.sqlite import SqliteEngine
from support.mariadb import remove_os_users_under
from support.postgresql import cleanup_homes, servers_running_in

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ENGINES = ["sqlite", "postgresql", "mariadb"]
DATABASE = "contract"
ROWS = 400
METHODS = {"sqlite": "sqlite-pages", "postgresql": "files", "mariadb": "mariabackup"}


class Subject(Protocol):
    """One engine under the contract, with a way to run SQL on its instances."""

    engine: Engine

    def execute(self, connection: Connection, *statements: str) -> list[tuple[Any, ...]]:
        """Run the statements; the rows of the last one."""
        ...


class SqliteSubject:
    def __init__(self) -> None:
        self.engine: Engine = SqliteEngine()

    def execute(self, connection: Connection, *statements: str) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(connection["path"], isolation_level=None)
        try:
            rows: list[tuple[Any, ...]] = []
            for statement in statements:
                rows = db.execute(statement).fetchall()
            return rows
        finally:
            db.close()


class PostgresSubject:
    def __init__(self) -> None:
        self.engine: Engine = PostgresEngine(timeout=120)

    def execute(self, connection: Connection, *statements: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(
            host=connection["socket_dir"],
            port=connection["port"],
            user=connection["superuser"],
            password=connection["password"],
            dbname=DATABASE,
            autocommit=True,
        ) as db:
            rows: list[tuple[Any, ...]] = []
            for statement in statements:
                cursor = db.execute(statement)
                rows = list(cursor.fetchall()) if cursor.description else []
            return rows


class MariaDbSubject:
    def __init__(self) -> None:
        self.engine: Engine = MariaDbEngine()

    def execute(self, connection: Connection, *statements: str) -> list[tuple[Any, ...]]:
        db = pymysql.connect(
            unix_socket=connection["socket"],
            user=connection["admin_user"],
            password=connection["admin_password"],
            database=DATABASE,
            autocommit=True,
        )
        try:
            with db.cursor() as cursor:
                rows: list[tuple[Any, ...]] = []
                for statement in statements:
                    cursor.execute(statement)
                    rows = [tuple(r) for r in cursor.fetchall()]
                return rows
        finally:
            db.close()


SUBJECTS = {"sqlite": SqliteSubject, "postgresql": PostgresSubject, "mariadb": MariaDbSubject}


class Lab:
    """One engine's instances, homes and stream files under a directory its servers'
    OS users can reach; everything is destroyed at the end."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.subject: Subject = SUBJECTS[name]()
        self.base = Path(tempfile.mkdtemp(prefix=f"sr-contract-{name}-"))
        os.chmod(self.base, 0o711)
        self.instances: list[tuple[Path, Connection]] = []
        self.counter = 0

    @property
    def engine(self) -> Engine:
        return self.subject.engine

    def home(self, label: str) -> Path:
        self.counter += 1
        return self.base / f"{label}-{self.counter}"

    def create_source(self) -> Connection:
        home = self.home("source")
        request = InstanceRequest("source", databases=(DatabaseSpec(DATABASE),))
        connection = self.engine.create_instance(home, request)
        self.instances.append((home, connection))
        values = ", ".join(f"({i}, 'row-{i}')" for i in range(1, ROWS + 1))
        self.subject.execute(
            connection,
            "CREATE TABLE items (id INTEGER PRIMARY KEY, v VARCHAR(64))",
            f"INSERT INTO items (id, v) VALUES {values}",
        )
        return connection

    def rows(self, connection: Connection) -> list[tuple[Any, ...]]:
        return self.subject.execute(connection, "SELECT id, v FROM items ORDER BY id")

    def backup(
        self, connection: Connection, parent: Metadata | None = None
    ) -> tuple[Metadata, Path]:
        path = self.base / f"stream-{self.counter}-{len(list(self.base.glob('stream-*')))}"
        with path.open("wb") as sink:
            result = self.engine.backup(connection, sink, parent=parent)
        assert result.incremental is (parent is not None)
        # What the manifest keeps: the metadata after a JSON round trip.
        return json.loads(json.dumps(result.metadata)), path

    def restore(self, home: Path, chain: list[tuple[Metadata, Path]]) -> Connection:
        with contextlib.ExitStack() as files:
            links = [
                RestoreInput(meta, files.enter_context(path.open("rb"))) for meta, path in chain
            ]
            connection = self.engine.restore_instance(home, links, InstanceRequest(home.name))
        self.instances.append((home, connection))
        return connection

    def destroy(self, home: Path, connection: Connection) -> None:
        self.instances.remove((home, connection))
        self.engine.destroy_instance(home, connection)

    def close(self) -> None:
        for home, connection in reversed(self.instances):
            with contextlib.suppress(Exception):
                self.engine.destroy_instance(home, connection)
        if self.name == "postgresql":
            cleanup_homes(self.base)
        if self.name == "mariadb":
            remove_os_users_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module", params=ENGINES)
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    name = request.param
    if SUBJECTS[name]().engine.detect() is None:
        pytest.skip(f"{name} is not installed")
    lab = Lab(name)
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def source(lab: Lab) -> Connection:
    return lab.create_source()


@pytest.fixture(scope="module")
def full(lab: Lab, source: Connection) -> tuple[Metadata, Path, list[tuple[Any, ...]]]:
    """A full backup of the source and the rows it holds."""
    rows = lab.rows(source)
    meta, path = lab.backup(source)
    return meta, path, rows


def _assert_nothing_left(lab: Lab, home: Path) -> None:
    assert not home.exists() or not any(home.iterdir())
    assert servers_running_in(home) == []


def test_the_engine_satisfies_the_protocol(lab: Lab) -> None:
    assert isinstance(lab.engine, Engine)
    info = lab.engine.detect()
    assert info is not None and info.datastore == lab.name


def test_full_backup_restores_the_same_rows(lab: Lab, full: Any) -> None:
    meta, path, rows = full
    assert len(rows) == ROWS
    home = lab.home("restored-full")
    restored = lab.restore(home, [(meta, path)])
    assert lab.rows(restored) == rows
    # The restored instance is an instance like any other: writable, and its own.
    lab.subject.execute(restored, "INSERT INTO items (id, v) VALUES (100000, 'after')")
    assert len(lab.rows(restored)) == ROWS + 1
    lab.destroy(home, restored)
    assert not home.exists()


def test_incremental_chain_restores_the_rows_of_its_last_link(
    lab: Lab, source: Connection, full: Any
) -> None:
    chain = [full[:2]]
    lab.subject.execute(
        source,
        "UPDATE items SET v = 'changed' WHERE id % 7 = 0",
        "DELETE FROM items WHERE id BETWEEN 10 AND 30",
        f"INSERT INTO items (id, v) VALUES ({ROWS + 1}, 'new-1'), ({ROWS + 2}, 'new-2')",
    )
    chain.append(lab.backup(source, parent=chain[-1][0]))
    middle = lab.rows(source)
    lab.subject.execute(
        source,
        "UPDATE items SET v = 'again' WHERE id % 11 = 0",
        "DELETE FROM items WHERE id > 390",
    )
    chain.append(lab.backup(source, parent=chain[-1][0]))
    last = lab.rows(source)
    assert middle != last != full[2]
    for length, expected in ((2, middle), (3, last)):
        home = lab.home(f"restored-chain-{length}")
        restored = lab.restore(home, chain[:length])
        assert lab.rows(restored) == expected, f"the chain of {length} links differs"
        lab.destroy(home, restored)


def _tamper(path: Path, how: str) -> Path:
    data = bytearray(path.read_bytes())
    if how == "flipped":
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])
    else:
        del data[len(data) // 2 :]
    bad = path.with_name(f"{path.name}-{how}")
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.parametrize("how", ["flipped", "truncated"])
def test_a_tampered_full_stream_is_refused(lab: Lab, full: Any, how: str) -> None:
    meta, path, _ = full
    home = lab.home(f"tampered-full-{how}")
    with pytest.raises(RestoreError):
        lab.restore(home, [(meta, _tamper(path, how))])
    _assert_nothing_left(lab, home)


def test_a_tampered_incremental_is_refused(lab: Lab, source: Connection, full: Any) -> None:
    lab.subject.execute(source, "UPDATE items SET v = 'tamper' WHERE id % 3 = 0")
    meta, path = lab.backup(source, parent=full[0])
    home = lab.home("tampered-incremental")
    with pytest.raises(RestoreError):
        lab.restore(home, [full[:2], (meta, _tamper(path, "truncated"))])
    _assert_nothing_left(lab, home)


class SlowStore:
    """A backup read as from a store that answers each read after ``delay`` seconds."""

    def __init__(self, path: Path, delay: float) -> None:
        self._file = path.open("rb")
        self._delay = delay
        self.reads = 0

    def read(self, size: int, /) -> bytes:
        time.sleep(self._delay)  # the store's answer, not a wait for the code under test
        self.reads += 1
        return self._file.read(size)

    def close(self) -> None:
        self._file.close()


def test_a_restore_given_less_time_than_it_takes_fails_and_leaves_nothing(
    lab: Lab, full: Any
) -> None:
    meta, path, _ = full
    home = lab.home("out-of-time")
    slow = SlowStore(path, delay=0.4)
    started = time.monotonic()
    try:
        with pytest.raises(RestoreError, match=r"ran out of time|did not finish within"):
            lab.engine.restore_instance(
                home, [RestoreInput(meta, slow)], InstanceRequest(home.name), timeout=1.0
            )
    finally:
        slow.close()
    took = time.monotonic() - started
    # It stopped reading at its time: the reads it made fit in it, with one more.
    assert slow.reads <= 1.0 / 0.4 + 1, slow.reads
    assert took < 30, took
    _assert_nothing_left(lab, home)


def test_metadata_loads_as_its_typed_model(lab: Lab, full: Any) -> None:
    meta = full[0]
    typed = models.METADATA.validate_python(meta)
    assert models.method_of(meta) == METHODS[lab.name]
    assert typed.model_dump(exclude_unset=True) == meta
    lab.engine.check_restorable(meta)
