"""Archived binary log batches without a server: positions, file names the server sends,
the event reader, and where a replay starts and stops (backup position, whole-second
stamps, clock marks, gaps)."""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

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
            before=replay.written_after(archive, when),
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


def test_a_transaction_committed_after_a_later_mark_is_not_replayed() -> None:
    """Transaction 2's statement began in the first second (its stamp) but it committed
    after the mark read at 1.8 s: a restore to 1.5 s stops at the mark's position."""
    raw = stream(
        rotate("mariadb-bin.000001", 500),
        fde(),
        gtid(1, 600, T0),
        xid(700, T0),
        gtid(2, 800, T0),
        xid(900, T0),
    )
    start, stop = binlog.encode(1, 500), binlog.encode(1, 900)
    marked = {"mark_time": at(1, 800_000).isoformat(), "mark_position": binlog.encode(1, 700)}
    assert replayed([batch(raw, start, stop)], start, at(1, 500_000)) == ["1", "2"]
    assert replayed([batch(raw, start, stop, **marked)], start, at(1, 500_000)) == ["1"]
    # At or after the mark's clock, the mark is a lower bound only.
    assert replayed([batch(raw, start, stop, **marked)], start, at(1, 800_000)) == ["1", "2"]
    assert replayed([batch(raw, start, stop, **marked)], start, None) == ["1", "2"]


def test_a_restore_to_a_time_the_archive_does_not_reach_is_refused() -> None:
    start, stop = binlog.encode(1, 500), binlog.encode(2, 500)
    covered = batch(two_files(), start, stop, archived_through=at(2).isoformat())
    replay.check_reaches([covered], at(2))
    replay.check_reaches([covered], at(1))
    with pytest.raises(RestoreError, match="reaches"):
        replay.check_reaches([covered], at(2, 1))
    with pytest.raises(RestoreError, match="no archived"):
        replay.check_reaches([], at(1))
    # A batch cut short by its caps covers nothing new: the newest coverage counts.
    cut = batch(b"", stop, stop + 10, archived_through=archiver.NOT_COVERED.isoformat())
    replay.check_reaches([covered, cut], at(2))
    with pytest.raises(RestoreError, match="archived_through"):
        replay.check_reaches([batch(b"", start, stop)], at(1))


def test_a_statement_logged_load_data_is_refused_before_the_decoder_sees_it(
    tmp_path: Path,
) -> None:
    load = event(17, 680, b"\x01\0\0\0" + b"secret,row\n")  # BEGIN_LOAD_QUERY: the file
    raw = stream(rotate("mariadb-bin.000001", 500), fde(), gtid(1, 600, T0), load, xid(700, T0))
    start, stop = binlog.encode(1, 500), binlog.encode(1, 700)
    sent: list[bytes] = []
    with pytest.raises(RestoreError, match="LOAD DATA"):
        for chunk in replay.events_after([batch(raw, start, stop)], start, None):
            sent.append(chunk)
    assert gtid(1, 600, T0) in sent and load not in sent
    argv = replay.decoder_argv("/usr/bin/mariadb-binlog", tmp_path)
    assert f"--local-load={tmp_path}" in argv and argv[-1] == "-"


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


# -- what one batch may take (one instance cannot hold up its host's archiving) ----------


class Counted:
    """Events as a dump sends them, counting how many were read."""

    def __init__(self, events: Iterator[bytes]) -> None:
        self._events = events
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        for raw in self._events:
            self.read += 1
            yield raw


def transactions(first_pos: int = 600) -> Iterator[bytes]:
    """A file section from offset 500, then transactions without end (GTID, XID)."""
    yield rotate("mariadb-bin.000001", 500)
    yield fde()
    pos, seq = first_pos, 1
    while True:
        yield gtid(seq, pos, T0)
        yield xid(pos + 100, T0)
        pos, seq = pos + 200, seq + 1


def tick(step: float) -> Callable[[], float]:
    now = [0.0]

    def clock() -> float:
        now[0] += step
        return now[0]

    return clock


def test_a_batch_ends_at_the_first_group_boundary_past_its_byte_cap() -> None:
    sink = io.BytesIO()
    events = Counted(transactions())
    limits = archiver.Limits(batch_bytes=1000)
    taken = archiver.take(events, sink, start=binlog.encode(1, 500), limits=limits)
    assert not taken.complete
    # Each event is 30-40 bytes: the batch stops at the first XID past 1000 bytes and
    # reads nothing after it; the next batch starts there.
    assert 1000 <= len(sink.getvalue()) < 1100
    assert events.read == 2 + 2 * taken.count // 2
    assert taken.count % 2 == 0 and binlog.decode(taken.stop) == (1, 500 + 100 * taken.count)
    rest = Counted(transactions(first_pos=binlog.decode(taken.stop)[1] + 100))
    more = archiver.take(rest, io.BytesIO(), start=taken.stop, limits=limits)
    assert more.first_gtid == "0-1-1" and more.stop > taken.stop


def test_a_batch_ends_at_a_group_boundary_past_its_seconds() -> None:
    events = Counted(transactions())
    limits = archiver.Limits(batch_seconds=10.0)
    taken = archiver.take(
        events, io.BytesIO(), start=binlog.encode(1, 500), limits=limits, clock=tick(1.0)
    )
    # Ten events (one clock second each): the fake rotate, the format description and
    # four transactions.
    assert not taken.complete and taken.count == 8 and events.read == 10


def test_heartbeats_count_against_the_caps() -> None:
    def heartbeats() -> Iterator[bytes]:
        while True:
            yield event(binlog.HEARTBEAT_EVENT, 0, b"mariadb-bin.000001")

    start = binlog.encode(1, 500)
    taken = archiver.take(
        heartbeats(), io.BytesIO(), start=start, limits=archiver.Limits(batch_bytes=4096)
    )
    assert not taken.complete and taken.stop == start and taken.count == 0


def test_a_group_that_does_not_end_within_the_hard_limit_fails_the_batch() -> None:
    def endless_transaction() -> Iterator[bytes]:
        yield gtid(1, 600, T0)
        pos = 600
        while True:
            pos += 100
            yield event(binlog.QUERY_EVENT, pos, struct.pack("<IIBHH", 1, 0, 2, 0, 0) + b"db\0x")

    limits = archiver.Limits(batch_bytes=1000, hard_bytes=5000)
    with pytest.raises(binlog.BinlogError, match="without ending"):
        archiver.take(
            endless_transaction(), io.BytesIO(), start=binlog.encode(1, 500), limits=limits
        )
    limits = archiver.Limits(batch_seconds=5, hard_seconds=20)
    with pytest.raises(binlog.BinlogError, match="without ending"):
        archiver.take(
            endless_transaction(),
            io.BytesIO(),
            start=binlog.encode(1, 500),
            limits=limits,
            clock=tick(1.0),
        )


def test_a_dump_that_reaches_the_end_is_complete() -> None:
    events = [rotate("mariadb-bin.000001", 500), fde(), gtid(1, 600, T0), xid(700, T0)]
    taken = archiver.take(
        iter(events), io.BytesIO(), start=binlog.encode(1, 500), limits=archiver.Limits()
    )
    assert taken.complete and taken.stop == binlog.encode(1, 700) and taken.last_gtid == "0-1-1"


@pytest.mark.parametrize(
    "bad",
    [
        event(binlog.GTID_EVENT, 600, b"\0\0"),  # too short for a GTID
        rotate("../etc.000001", 4),  # a file name the archive did not ask for
        rotate("mariadb-bin.9999999999", 4),  # an index past a signed 64-bit position
        event(binlog.XID_EVENT, 700)[:-1],  # shorter than its header says
    ],
)
def test_garbage_from_the_server_is_a_binlog_error(bad: bytes) -> None:
    events = [rotate("mariadb-bin.000001", 500), fde(), bad]
    with pytest.raises(binlog.BinlogError):
        archiver.take(
            iter(events), io.BytesIO(), start=binlog.encode(1, 500), limits=archiver.Limits()
        )


def test_file_indexes_fit_a_signed_64_bit_position() -> None:
    assert binlog.encode(binlog.MAX_FILE_INDEX, 0xFFFFFFFF) < 1 << 63
    with pytest.raises(binlog.BinlogError):
        binlog.encode(binlog.MAX_FILE_INDEX + 1, 4)
    with pytest.raises(binlog.BinlogError):
        binlog.file_index(f"mariadb-bin.{binlog.MAX_FILE_INDEX + 1}")


# -- one event's size ----------------------------------------------------------------------


class FakeDumpConnection:
    """What :func:`archiver._events` uses of a pymysql connection: packets from bytes."""

    def __init__(self, wire: bytes) -> None:
        self._wire = io.BytesIO(wire)
        self._next_seq_id = 1
        self._sock = self
        self.largest_read = 0

    def settimeout(self, seconds: float) -> None:
        assert 0 < seconds <= 60

    def _read_bytes(self, size: int) -> bytes:
        self.largest_read = max(self.largest_read, size)
        data = self._wire.read(size)
        assert len(data) == size
        return data


def packets(*payloads: bytes) -> bytes:
    out, seq = b"", 1
    for payload in payloads:
        out += len(payload).to_bytes(3, "little") + bytes([seq]) + payload
        seq += 1
    return out


def test_an_event_larger_than_the_limit_is_refused_before_its_body_is_read() -> None:
    huge = binlog.HEADER.pack(T0, binlog.QUERY_EVENT, 1, (256 << 20) + 1, 900, 0)
    first = b"\0" + huge + b"x" * 100
    # The first packet of a multi-packet event is 16 MiB - 1 long; the refusal comes
    # from its header, before anything after the first packet.
    wire = (0xFFFFFF).to_bytes(3, "little") + b"\x01" + first
    conn = FakeDumpConnection(wire + b"\0" * (0xFFFFFF - len(first)))
    with pytest.raises(binlog.BinlogError, match=f"{(256 << 20) + 1} bytes"):
        list(archiver._events(conn, deadline=time.monotonic() + 60, read_seconds=60))
    assert conn.largest_read == 0xFFFFFF
    with pytest.raises(binlog.BinlogError, match="256 MiB"):
        list(binlog.EventReader(io.BytesIO(binlog.MAGIC + huge), start=binlog.encode(1, 4)))


def test_dump_packets_are_events_until_the_end() -> None:
    one, two = gtid(1, 600, T0), xid(700, T0)
    conn = FakeDumpConnection(packets(b"\0" + one, b"\0" + two, b"\xfe\0\0\0\0"))
    assert list(archiver._events(conn, deadline=time.monotonic() + 60, read_seconds=60)) == [
        one,
        two,
    ]
    conn = FakeDumpConnection(packets(b"\x01" + one))
    with pytest.raises(binlog.BinlogError, match="not an event"):
        list(archiver._events(conn, deadline=time.monotonic() + 60, read_seconds=60))
