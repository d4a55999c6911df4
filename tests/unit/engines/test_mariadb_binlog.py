"""Archived binary log batches without a server: positions, file names the server sends,
the event reader, and where a replay starts and stops (backup position, whole-second
stamps, clock marks, gaps)."""

from __future__ import annotations

import io
import struct
import zlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from strongroom.engines.base import RestoreInput
from strongroom.engines.errors import RestoreError
from strongroom.engines.mariadb import archiver, binlog, replay

T0 = 1_796_580_000  # an epoch second


def event(type_: int, log_pos: int, body: bytes = b"", *, ts: int = T0, crc: bool = True) -> bytes:
    size = binlog.HEADER_SIZE + len(body) + (4 if crc else 0)
    head = binlog.HEADER.pack(ts, type_, 1, size, log_pos, 0)
    raw = head + body
    return raw + struct.pack("<I", zlib.crc32(raw)) if crc else raw


def rotate(name: str, offset: int, log_pos: int = 0) -> bytes:
    return event(binlog.ROTATE_EVENT, log_pos, struct.pack("<Q", offset) + name.encode())


def gtid(seq: int, log_pos: int, ts: int) -> bytes:
    return event(binlog.GTID_EVENT, log_pos, struct.pack("<QIB", seq, 0, 0) + b"\0" * 6, ts=ts)


def fde(log_pos: int = 0) -> bytes:
    return event(binlog.FORMAT_DESCRIPTION_EVENT, log_pos, b"\x04\x00" + b"\0" * 60)


def xid(log_pos: int, ts: int) -> bytes:
    return event(binlog.XID_EVENT, log_pos, struct.pack("<Q", 7), ts=ts)


def test_positions_sort_in_log_order_and_round_trip() -> None:
    a, b, c = binlog.encode(1, 900), binlog.encode(2, 4), binlog.encode(2, 5000)
    assert a < b < c
    assert binlog.decode(c) == (2, 5000)
    assert binlog.format_position(b) == "2:4"
    with pytest.raises(binlog.BinlogError):
        binlog.encode(1, 1 << 32)


@pytest.mark.parametrize(
    "name",
    ["../x.000001", "a/b.000001", "mariadb-bin.", "mariadb-bin.12", "x.000001\0", "", "a" * 300],
)
def test_file_names_the_server_sends_are_checked(name: str) -> None:
    with pytest.raises(binlog.BinlogError):
        binlog.file_index(name)


def test_file_names_and_indexes() -> None:
    assert binlog.file_index("mariadb-bin.000042") == 42
    assert binlog.file_name("mariadb-bin", 42) == "mariadb-bin.000042"
    assert binlog.file_index("mariadb-bin.1000000") == 1_000_000


def stream(*events: bytes) -> bytes:
    return binlog.MAGIC + b"".join(events)


def two_files() -> bytes:
    """File 1 from offset 500: two transactions; a rotate; file 2 from its start: one."""
    return stream(
        rotate("mariadb-bin.000001", 500),
        fde(),
        gtid(1, 600, T0),
        xid(700, T0),
        gtid(2, 800, T0 + 1),
        xid(900, T0 + 1),
        rotate("mariadb-bin.000002", 4, log_pos=950),
        rotate("mariadb-bin.000002", 4),
        fde(256),
        gtid(3, 400, T0 + 2),
        xid(500, T0 + 2),
    )


def test_the_reader_follows_files_and_positions() -> None:
    start = binlog.encode(1, 500)
    events = list(binlog.EventReader(io.BytesIO(two_files()), start=start))
    real = [e for e in events if not e.fake]
    assert [binlog.format_position(e.end) for e in real] == [
        "1:600",
        "1:700",
        "1:800",
        "1:900",
        "2:4",  # after a real rotate: the next file's start
        "2:256",
        "2:400",
        "2:500",
    ]
    assert real[0].gtid() == "0-1-1"
    assert binlog.rotate_target(events[0].raw) == ("mariadb-bin.000001", 500)


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[:-3],  # ends inside an event
        lambda raw: b"XXXXXXXX" + raw[8:],  # not a batch
        lambda raw: raw[:8] + raw[8:20],  # ends inside a header
    ],
)
def test_a_damaged_stream_is_refused(damage: object) -> None:
    raw = damage(two_files())  # type: ignore[operator]
    with pytest.raises(binlog.BinlogError):
        list(binlog.EventReader(io.BytesIO(raw), start=binlog.encode(1, 500)))


def batch(raw: bytes, start: int, stop: int, **extra: object) -> RestoreInput:
    meta = {
        "method": archiver.ARCHIVE_METHOD,
        "format": binlog.FORMAT_VERSION,
        "start": start,
        "stop": stop,
        "start_file": binlog.file_name("mariadb-bin", binlog.decode(start)[0]),
        **extra,
    }
    return RestoreInput(meta, io.BytesIO(raw))


def replayed(archive: list[RestoreInput], position: int, when: datetime | None) -> list[str]:
    """The GTIDs a replay to ``when`` from ``position`` sends to the decoder."""
    data = b"".join(
        replay.events_after(
            archive,
            position,
            replay.stop_second(when),
            through=replay.reached(archive, position, when),
        )
    )
    assert data.startswith(binlog.BINLOG_MAGIC)
    reader = binlog.EventReader(io.BytesIO(binlog.MAGIC + data[4:]), start=position)
    kinds = [(e.type, e.raw) for e in reader]
    # Every file's format description goes first; no rotate reaches the decoder.
    assert binlog.ROTATE_EVENT not in [k for k, _ in kinds]
    return [
        f"{struct.unpack_from('<Q', raw, binlog.HEADER_SIZE)[0]}"
        for k, raw in kinds
        if k == binlog.GTID_EVENT
    ]


def at(second: int, micro: int = 0) -> datetime:
    return datetime.fromtimestamp(T0 + second, UTC).replace(tzinfo=None, microsecond=micro)


def test_replay_stops_before_the_first_transaction_stamped_in_the_times_second() -> None:
    start, stop = binlog.encode(1, 500), binlog.encode(2, 500)
    archive = lambda: [batch(two_files(), start, stop)]  # noqa: E731
    assert replayed(archive(), start, None) == ["1", "2", "3"]
    assert replayed(archive(), start, at(0)) == []
    assert replayed(archive(), start, at(0, 999_999)) == []
    assert replayed(archive(), start, at(1)) == ["1"]
    assert replayed(archive(), start, at(2, 500_000)) == ["1", "2"]
    assert replayed(archive(), start, at(3)) == ["1", "2", "3"]
    # An aware time is taken in UTC, whatever its offset.
    five = timezone(timedelta(hours=5))
    aware = datetime.fromtimestamp(T0 + 2, five)
    assert replay.stop_second(aware) == T0 + 2


def test_replay_skips_what_the_backup_holds() -> None:
    start, stop = binlog.encode(1, 500), binlog.encode(2, 500)
    backup_at = binlog.encode(1, 700)  # after transaction 1
    assert replayed([batch(two_files(), start, stop)], backup_at, None) == ["2", "3"]
    backup_at = binlog.encode(2, 256)  # in the second file
    assert replayed([batch(two_files(), start, stop)], backup_at, None) == ["3"]


def test_a_mark_replays_up_to_it_whatever_the_stamps() -> None:
    start, stop = binlog.encode(1, 500), binlog.encode(2, 500)
    marked = {"mark_time": at(1, 300_000).isoformat(), "mark_position": binlog.encode(1, 900)}
    # The mark's clock is before the time: transaction 2 (stamped in the time's second,
    # committed before the mark) is replayed.
    assert replayed([batch(two_files(), start, stop, **marked)], start, at(1, 400_000)) == [
        "1",
        "2",
    ]
    # Before the mark's clock: the stamps decide.
    assert replayed([batch(two_files(), start, stop, **marked)], start, at(1, 200_000)) == ["1"]


def test_batches_must_join_and_cover_the_backup() -> None:
    one = batch(b"", binlog.encode(1, 500), binlog.encode(1, 900))
    two = batch(b"", binlog.encode(1, 900), binlog.encode(2, 100))
    gap = batch(b"", binlog.encode(1, 950), binlog.encode(2, 100))
    replay.check_batches([one, two], "mariadb-bin", binlog.encode(1, 600))
    with pytest.raises(RestoreError, match="gap"):
        replay.check_batches([one, gap], "mariadb-bin", binlog.encode(1, 600))
    with pytest.raises(RestoreError, match="gap"):
        replay.check_batches([two], "mariadb-bin", binlog.encode(1, 600))  # starts after it
    with pytest.raises(RestoreError, match="another server"):
        replay.check_batches([one], "other-bin", binlog.encode(1, 600))
    wrong = batch(b"", binlog.encode(1, 500), binlog.encode(1, 900), method="pg_wal_archive")
    with pytest.raises(RestoreError, match="not a MariaDB"):
        replay.check_batches([wrong], "mariadb-bin", binlog.encode(1, 600))


def test_the_backups_position_comes_from_its_newest_link() -> None:
    chain = [
        {"binlog": {"file": "mariadb-bin.000001", "position": 10, "gtid": ""}},
        {"binlog": {"file": "mariadb-bin.000003", "position": 77, "gtid": "0-1-9"}},
    ]
    assert replay.backup_position(chain) == ("mariadb-bin", binlog.encode(3, 77))
    for bad in ({"binlog": None}, {"binlog": {"file": "mariadb-bin.x", "position": 1}}):
        with pytest.raises(RestoreError):
            replay.backup_position([bad])


def test_metadata_records_positions_by_file_and_the_mark() -> None:
    b = archiver.ArchiveBatch(
        "mariadb-bin",
        binlog.encode(1, 500),
        binlog.encode(2, 500),
        at(2),
        "0-1-1",
        "0-1-3",
        at(2),
        8,
        mark_time=at(2),
        mark_position=binlog.encode(2, 400),
    )
    meta = b.metadata()
    assert (meta["start_file"], meta["start_offset"]) == ("mariadb-bin.000001", 500)
    assert (meta["stop_file"], meta["stop_offset"]) == ("mariadb-bin.000002", 500)
    assert b.archived().stop == binlog.encode(2, 500)
    assert meta["mark_position"] == binlog.encode(2, 400)


def query(text: bytes, log_pos: int = 100) -> binlog.Event:
    # Post-header (13 bytes), no status variables, database "db", then the statement.
    body = struct.pack("<IIBHH", 1, 0, 2, 0, 0) + b"db\0" + text
    return binlog.Tracker(1).event(event(binlog.QUERY_EVENT, log_pos, body))


@pytest.mark.parametrize(
    ("text", "group", "ends"),
    [
        (b"COMMIT", "transaction", True),
        (b"ROLLBACK", "transaction", True),
        (b"XA COMMIT X'31',X'',1", "transaction", True),
        (b"INSERT INTO t VALUES (1)", "transaction", False),
        (b"CREATE TABLE t (a int)", "standalone", True),
    ],
)
def test_the_end_of_a_group(text: bytes, group: str, ends: bool) -> None:
    assert archiver._ends_group(query(text), group) is ends


def test_xid_and_xa_prepare_end_a_group() -> None:
    for type_ in (binlog.XID_EVENT, binlog.XA_PREPARE_EVENT):
        made = binlog.Tracker(1).event(event(type_, 100, b"\0" * 8))
        assert archiver._ends_group(made, "transaction")
