"""Reaching a SQLite file by descriptor: locations, what a name leads to, whose lock it is."""

from __future__ import annotations

import os
import sqlite3
import struct
from pathlib import Path

import pytest

from strongroom.engines.sqlite.files import (
    DatabaseFileError,
    FileLocation,
    holds_shared_lock,
    open_database,
)
from strongroom.engines.sqlite.pagereader import main_file_facts


def _db(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize(
    "root, path",
    [
        ("/srv", "/srv"),  # the root itself
        ("/srv/a", "/srv/ab/x.db"),  # beside, not inside
        ("/srv", "/srv/a/../../etc/x.db"),
        ("/srv", "/srv//a/x.db"),
        ("/srv", "relative.db"),
    ],
)
def test_locations_outside_their_root_are_refused(root: str, path: str) -> None:
    with pytest.raises(DatabaseFileError):
        FileLocation.of({"root": root, "path": path})


def test_location_without_root_walks_from_the_top() -> None:
    assert FileLocation.of({"path": "/srv/a/x.db"}).parts() == ("srv/a", "x.db")
    assert FileLocation.of({"root": "/srv/a", "path": "/srv/a/x.db"}).parts() == ("", "x.db")


def test_open_database_checks_type_and_identity(tmp_path: Path) -> None:
    path = _db(tmp_path / "d" / "x.db")
    st = path.stat()
    location = FileLocation(str(tmp_path), str(path))
    with open_database(location, (st.st_dev, st.st_ino)) as files:
        assert files.identity == (st.st_dev, st.st_ino) and files.name_leads_here()
    with pytest.raises(DatabaseFileError, match="replaced"):
        open_database(location, (st.st_dev, st.st_ino + 1))
    (tmp_path / "d").rename(tmp_path / "real")
    (tmp_path / "d").symlink_to(tmp_path / "real")
    with pytest.raises(DatabaseFileError, match="symbolic link"):
        open_database(location, None)


def test_shared_lock_is_found_on_the_inode_sqlite_locked(tmp_path: Path) -> None:
    locked, other = _db(tmp_path / "locked.db"), _db(tmp_path / "other.db")
    identity = lambda p: (p.stat().st_dev, p.stat().st_ino)  # noqa: E731
    conn = sqlite3.connect(locked, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM t").fetchone()
    try:
        if holds_shared_lock(identity(locked)) is None:
            pytest.skip("the kernel does not list locks here")
        assert holds_shared_lock(identity(locked)) is True
        assert holds_shared_lock(identity(other)) is False
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert holds_shared_lock(identity(locked)) is False


def test_main_file_facts_read_the_header(tmp_path: Path) -> None:
    path = _db(tmp_path / "x.db")
    fd = os.open(path, os.O_RDONLY)
    try:
        facts = main_file_facts(fd)
    finally:
        os.close(fd)
    size = path.stat().st_size
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    assert facts == {"db_bytes": size, "db_page_size": page_size, "db_header_pages": page_count}
    stale = bytearray(path.read_bytes())
    struct.pack_into(">I", stale, 92, 12345)  # "version-valid-for" no longer matches
    (tmp_path / "stale.db").write_bytes(stale)
    fd = os.open(tmp_path / "stale.db", os.O_RDONLY)
    try:
        assert main_file_facts(fd)["db_header_pages"] == 0
    finally:
        os.close(fd)
