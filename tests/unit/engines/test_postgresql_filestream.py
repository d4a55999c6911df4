"""File-level PostgreSQL streams without a server: pages with chosen LSNs in real files,
written by DirStreamWriter and laid out by ChainRestorer, newest link first."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import pytest

from strongroom.engines import beneath
from strongroom.engines.postgresql import datadir, filestream
from support.pg_filestream import BS, Link, backup, page, restore, walk, write_pages


def test_changed_runs_selects_pages_by_lsn(tmp_path: Path) -> None:
    lsns = [5, 100, 150, 0, 7, 200, 200, 3]
    write_pages(tmp_path / "rel", [page(lsn, i) for i, lsn in enumerate(lsns)])
    fd = os.open(tmp_path / "rel", os.O_RDONLY)
    try:
        runs = [
            (first, len(view) // BS, bytes(view[8:9]))
            for first, view in datadir.changed_runs(fd, len(lsns) * BS, 100, BS)
        ]
    finally:
        os.close(fd)
    # 100 and 150 (at or after the threshold), 0 (never written), 200 200
    assert runs == [(1, 3, b"\x01"), (5, 2, b"\x05")]


def test_walk_follows_pg_basebackup_exclusions(tmp_path: Path) -> None:
    for rel in (
        "PG_VERSION",
        "postmaster.pid",
        "backup_label",
        "pg_wal/000000010000000000000001",
        "pg_stat_tmp/db.stat",
        "base/1/1259",
        "base/1/pg_internal.init",
        "base/1/t3_16384",
        "base/1/pgsql_tmp/x",
    ):
        write_pages(tmp_path / rel, [page(1, 1)])
    paths = {e.path for e in walk(tmp_path)}
    assert paths == {
        "PG_VERSION",
        "base",
        "base/1",
        "base/1/1259",
        "pg_wal",
        "pg_wal/archive_status",
        "pg_stat_tmp",
    }
    # a WAL directory elsewhere (initdb --waldir) is kept as an empty directory
    (tmp_path / "pg_wal" / "000000010000000000000001").unlink()
    (tmp_path / "pg_wal").rmdir()
    os.symlink(tmp_path / "base", tmp_path / "pg_wal")
    assert {e.path for e in walk(tmp_path)} == paths
    (tmp_path / "pg_tblspc").mkdir()
    os.symlink(tmp_path, tmp_path / "pg_tblspc" / "16500")
    with pytest.raises(datadir.DataDirError, match="tablespaces are not supported"):
        walk(tmp_path)
    (tmp_path / "pg_tblspc" / "16500").unlink()
    os.symlink(tmp_path, tmp_path / "base" / "elsewhere")
    with pytest.raises(datadir.DataDirError, match="symbolic link"):
        walk(tmp_path)


@pytest.mark.parametrize("workers", [1, 3])
def test_chain_is_restored_newest_first_with_each_block_from_its_newest_link(
    tmp_path: Path, workers: int
) -> None:
    src = tmp_path / "src"
    rel = src / "base/5/16384"
    write_pages(rel, [page(10, i) for i in range(6)])
    write_pages(src / "base/5/16384_vm", [page(10, 0xAA)])
    write_pages(src / "base/5/16390", [page(10, 0x11)] * 2)  # dropped later
    full, _ = backup(src, None)

    # parent started at 20: blocks 1 and 4 change, the table grows by a block
    pages = [page(10, i) for i in range(6)]
    pages[1], pages[4] = page(30, 0x71), page(31, 0x74)
    pages.append(page(32, 0x76))
    write_pages(rel, pages)
    inc1, n1 = backup(src, 20)
    assert n1 == 3

    # next parent started at 40: block 4 again; the table loses its last two blocks,
    # a relation is dropped, a new one appears
    pages[4] = page(45, 0x84)
    write_pages(rel, pages[:5])
    (src / "base/5/16390").unlink()
    write_pages(src / "base/5/16400", [page(50, 0x99)])
    inc2, n2 = backup(src, 40)
    assert n2 == 2

    target = tmp_path / "target"
    target.mkdir()
    files = restore(target, [inc2, inc1, full], workers)
    assert files == ["base/5/16384", "base/5/16384_vm", "base/5/16400"]
    assert (target / "base/5/16384").read_bytes() == rel.read_bytes()
    assert (target / "base/5/16400").read_bytes() == page(50, 0x99)
    assert not (target / "base/5/16390").exists()

    # the middle of the chain alone restores the state it recorded
    target1 = tmp_path / "target1"
    target1.mkdir()
    restore(target1, [inc1, full], workers)
    restored = (target1 / "base/5/16384").read_bytes()
    expected = [page(10, 0), page(30, 0x71), page(10, 2), page(10, 3), page(31, 0x74)]
    expected += [page(10, 5), page(32, 0x76)]
    assert restored == b"".join(expected)


def test_a_chain_missing_its_full_backup_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_pages(src / "base/5/16384", [page(10, 1), page(30, 2)])
    inc, _ = backup(src, 20)
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(filestream.FileStreamError, match="does not hold every page"):
        restore(target, [inc])


def test_damaged_records_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_pages(src / "base/5/16384", [page(10, 1), page(30, 2)])
    link, _ = backup(src, None)
    full = link.raw
    flipped = bytearray(full)
    flipped[len(full) // 2] ^= 0xFF
    for bad, message in (
        (bytes(flipped), "checksum"),
        (full[: len(full) // 2], "ends"),
        (b"NOTAPGDIR" + full[9:], "not a PostgreSQL file-level backup"),
    ):
        target = tmp_path / f"t-{message.split()[0]}"
        target.mkdir()
        with pytest.raises(filestream.FileStreamError, match=message):
            restore(target, [bad])


def test_paths_cannot_leave_the_target(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = filestream.DirStreamWriter(out, {"block_size": BS})
    writer.directory("../escape")
    target = tmp_path / "target"
    target.mkdir()
    with (
        pytest.raises(filestream.FileStreamError, match="unsafe path"),
        filestream.ChainRestorer(target, None) as restorer,
    ):
        restorer.apply(io.BytesIO(out.getvalue()), lambda h: None)
    assert not (tmp_path / "escape").exists()


def test_malformed_headers_and_names_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    zero = io.BytesIO()
    filestream.DirStreamWriter(zero, {"block_size": 0}).directory("base")
    bad_name = io.BytesIO()
    filestream.DirStreamWriter(bad_name, {"block_size": BS})
    bad_name.write(b"d" + struct.pack("!H", 2) + b"\xff\xfe")
    for raw, message in ((zero, "block size"), (bad_name, "not UTF-8")):
        with (
            pytest.raises(filestream.FileStreamError, match=message),
            filestream.ChainRestorer(target, None) as restorer,
        ):
            restorer.apply(io.BytesIO(raw.getvalue()), lambda h: None)


def test_record_checksums_are_zlibs_crc32() -> None:
    """Streams written before the checksum moved to zlib-ng carry zlib's CRC-32: the two
    must agree, chained over pieces as records are read."""
    import os
    import zlib

    pieces = [os.urandom(n) for n in (0, 1, 7, 4096, 65_537, 1 << 20)]
    ours = theirs = 0
    for piece in pieces:
        ours, theirs = filestream.crc32(piece, ours), zlib.crc32(piece, theirs)
        assert ours == theirs


def test_segments_that_do_not_fall_between_records_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for n in range(4):
        write_pages(src / f"base/5/{16384 + n}", [page(10, n)] * 3)
    link, _ = backup(src, None)
    assert len(link.segments) >= 4
    moved = [*link.segments[:-2], link.segments[-2] + 3, link.segments[-1]]
    for segments, message in (
        # the segment before it overruns, or the moved one reads garbage: either fails
        (moved, "segments do not fit|corrupted|unsafe path|ends early"),
        (list(reversed(link.segments)), "segment offsets are malformed"),
        ([5, *link.segments], "segment offsets are malformed"),  # inside the header
    ):
        target = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
        target.mkdir()
        with pytest.raises(filestream.FileStreamError, match=message):
            restore(target, [Link(link.raw, segments)], workers=3)


def test_a_damaged_segment_fails_the_link_laid_out_in_parallel(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for n in range(6):
        write_pages(src / f"base/5/{16384 + n}", [page(10, n)] * 4)
    link, _ = backup(src, None)
    damaged = bytearray(link.raw)
    damaged[link.segments[-2] + 200] ^= 0xFF  # inside a page of a file in the middle
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(filestream.FileStreamError, match="checksum"):
        restore(target, [Link(bytes(damaged), link.segments)], workers=3)


def test_a_directory_swapped_for_a_link_mid_walk_fails_the_walk(tmp_path: Path) -> None:
    """The tenant renames a directory away and leaves a link to a secret place between
    the walk's listing and its descent: the walk refuses, it never lists the target."""
    write_pages(tmp_path / "base/1/1259", [page(1, 1)])
    elsewhere = tmp_path.parent / (tmp_path.name + "-elsewhere")
    write_pages(elsewhere / "secret", [page(1, 2)])
    seen = []
    with beneath.directory(tmp_path) as fd, pytest.raises(datadir.DataDirError, match="replaced"):
        for entry in datadir.walk(fd):
            seen.append(entry.path)
            if entry.path == "base/1":
                os.rename(tmp_path / "base/1", tmp_path / "base/1.away")
                os.symlink(elsewhere, tmp_path / "base/1")
    assert not any("secret" in p for p in seen)


def test_a_file_swapped_for_a_link_or_a_fifo_is_not_read(tmp_path: Path) -> None:
    write_pages(tmp_path / "base/1/1259", [page(1, 1)])
    secret = tmp_path.parent / (tmp_path.name + "-secret")
    secret.write_bytes(b"master key bytes")
    for replace in (
        lambda p: os.symlink(secret, p),
        lambda p: os.mkfifo(p),
    ):
        with beneath.directory(tmp_path) as fd:
            owner = os.fstat(fd).st_uid
            with pytest.raises(datadir.DataDirError, match="replaced"):
                for entry in datadir.walk(fd):
                    if entry.path == "base/1/1259":
                        os.rename(tmp_path / entry.path, tmp_path / "base/1/1259.away")
                        replace(tmp_path / entry.path)
                        datadir.open_file(entry, owner)
        os.unlink(tmp_path / "base/1/1259")
        os.rename(tmp_path / "base/1/1259.away", tmp_path / "base/1/1259")


def test_a_file_of_another_owner_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file away")
    write_pages(tmp_path / "base/1/1259", [page(1, 1)])
    os.chown(tmp_path / "base/1/1259", 65534, 65534)  # as a hard link to it would be
    with beneath.directory(tmp_path) as fd:
        owner = os.fstat(fd).st_uid
        entries = [e for e in datadir.walk(fd) if e.path == "base/1/1259"]
        with beneath.directory(tmp_path / "base/1") as parent:
            entry = datadir.Entry("base/1/1259", False, 0, parent, "1259")
            with pytest.raises(datadir.DataDirError, match="does not belong"):
                datadir.open_file(entry, owner)
    assert len(entries) == 1


def test_restore_never_writes_through_a_link_in_the_target(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_pages(src / "base/5/16384", [page(10, 1)])
    link, _ = backup(src, None)
    target = tmp_path / "target"
    outside = tmp_path / "outside"
    outside.mkdir()
    target.mkdir()
    os.symlink(outside, target / "base")
    with pytest.raises((OSError, filestream.FileStreamError)):
        restore(target, [link])
    assert list(outside.iterdir()) == []
