"""A stand-in for a PostgreSQL server on a TCP port, as a tenant can put one where the
service reaches its server (an external server it registered is any program it likes): it
speaks the protocol as far as the archiver needs (a session's simple and extended queries,
``IDENTIFY_SYSTEM``, ``START_REPLICATION``), then plays the walsender as the test says
(:class:`Play`), and records what it was asked.

It runs in a process of its own: libpq's blocking connect holds the interpreter's lock,
so a listener on a thread of the test's process would never answer it."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from strongroom.engines.postgresql.lsn import format_lsn, parse_lsn

# Type oids of the columns the answers use.
BOOL, INT8, INT4, TEXT, TIMESTAMPTZ = 16, 20, 23, 25, 1184
SEND_MAX = 128 << 10  # a walsender's largest piece of WAL in one message
_PG_EPOCH_US = 946_684_800 * 1_000_000


@dataclass(frozen=True)
class Rows:
    """A result: ``(name, type oid)`` columns and rows of text values (None: NULL)."""

    columns: list[tuple[str, int]]
    rows: list[tuple[str | None, ...]]


Reply = Rows | str | None  # rows, a command tag, or None: the statement's first word as tag


class WalChannel:
    """The replication connection once the client asked for WAL from ``start``: what the
    walsender sends, and what the client sent back (status updates, its end of the copy)."""

    def __init__(self, client: socket.socket, start: int, stopped: Any) -> None:
        self.client = client
        self.start = start
        self.stopped = stopped
        self.copy_done = False  # the client ended its side of the copy
        self._pending = b""

    def wal(self, position: int, data: bytes) -> None:
        header = b"w" + struct.pack("!QQq", position, position + len(data), _now_us())
        self.raw(header + data)

    def keepalive(self, position: int, reply: bool = False) -> None:
        self.raw(b"k" + struct.pack("!Qq?", position, _now_us(), reply))

    def raw(self, payload: bytes) -> None:
        self.client.sendall(_message(b"d", payload))

    def end_copy(self) -> None:
        """End the copy as a walsender does after the client's CopyDone."""
        self.client.sendall(
            _message(b"c", b"") + _message(b"C", b"START_STREAMING\0") + _message(b"Z", b"I")
        )

    def poll(self, timeout: float = 0.0) -> None:
        """Read what the client sent, waiting up to ``timeout`` for it."""
        while select.select([self.client], [], [], timeout)[0]:
            timeout = 0.0
            piece = self.client.recv(65536)
            if not piece:
                raise ConnectionError("the client went away")
            self._pending += piece
            while len(self._pending) >= 5:
                kind = self._pending[:1]
                (length,) = struct.unpack("!I", self._pending[1:5])
                if len(self._pending) < 1 + length:
                    break
                self._pending = self._pending[1 + length :]
                if kind == b"c":
                    self.copy_done = True
                elif kind == b"X":
                    raise ConnectionError("the client ended the session")


@dataclass(frozen=True)
class Play:
    """What the walsender does once the client asked for WAL from a position:

    ``"trickle"``: a byte of WAL every ``interval`` seconds, without end;
    ``"old_wal"``: one byte of WAL from before that position, over and over without pause
    (every message arrives at once, none holds anything new);
    ``"serve"``: WAL up to ``stop`` at once, then wait; it ends the copy when the client
    does only if ``end_copy`` (else keepalives go on);
    ``"one_message"``: one message of ``size`` bytes of WAL, then the copy's end when the
    client asks."""

    kind: str
    interval: float = 0.05
    stop: int = 0
    end_copy: bool = True
    size: int = 0


def trickle(interval: float) -> Play:
    return Play("trickle", interval=interval)


def serve_until(stop: int, *, end_copy: bool) -> Play:
    return Play("serve", stop=stop, end_copy=end_copy)


def one_message(size: int) -> Play:
    return Play("one_message", size=size)


OLD_WAL = Play("old_wal")


def _play(play: Play, channel: WalChannel) -> None:
    position = channel.start
    if play.kind == "trickle":
        while not channel.stopped.wait(play.interval):
            channel.poll()
            channel.wal(position, b"\x01")
            position += 1
    elif play.kind == "old_wal":
        body = b"w" + struct.pack("!QQq", position - 1, position, 0) + b"x"
        burst = _message(b"d", body) * 1000
        while not channel.stopped.is_set():
            channel.poll()
            channel.client.sendall(burst)
    elif play.kind == "serve":
        while position < play.stop:
            size = min(SEND_MAX, play.stop - position)
            channel.wal(position, bytes([position % 251 + 1]) * size)
            position += size
        while not channel.stopped.is_set():
            channel.poll(0.1)
            if channel.copy_done:
                if play.end_copy:
                    channel.end_copy()
                    return
                channel.keepalive(position)
    elif play.kind == "one_message":
        channel.wal(position, b"\x02" * play.size)
        while not channel.stopped.is_set():
            channel.poll(0.1)
            if channel.copy_done:
                channel.end_copy()
                return


class StandIn:
    """A stand-in in a process of its own, listening on 127.0.0.1 as a PostgreSQL server
    of ``segment_size`` WAL segments whose archive slot keeps WAL from ``slot_lsn`` and
    whose WAL ends at ``insert_lsn``; ``play`` is what its walsender does. ``statements``
    and ``visits`` (when each connection came, naive UTC) are what clients did."""

    def __init__(
        self,
        *,
        play: Play,
        slot_lsn: int,
        insert_lsn: int,
        segment_size: int = 16 << 20,
        server_version_num: int = 150000,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._events: Any = context.Queue()
        self._stopped = context.Event()
        config = {
            "play": play,
            "slot_lsn": slot_lsn,
            "insert_lsn": insert_lsn,
            "segment_size": segment_size,
            "server_version_num": server_version_num,
        }
        self._process = context.Process(
            target=_serve, args=(config, self._events, self._stopped), daemon=True
        )
        self._process.start()
        kind, port = self._events.get(timeout=60)
        assert kind == "port"
        self.port: int = port
        self._statements: list[str] = []
        self._visits: list[datetime] = []

    def _drain(self) -> None:
        while True:
            try:
                kind, value = self._events.get_nowait()
            except queue.Empty:
                return
            (self._statements if kind == "statement" else self._visits).append(value)

    @property
    def statements(self) -> list[str]:
        self._drain()
        return self._statements

    @property
    def visits(self) -> list[datetime]:
        self._drain()
        return self._visits

    def connection(self) -> dict[str, object]:
        """How the service reaches it: an external server's connection."""
        return {
            "managed": False,
            "host": "127.0.0.1",
            "port": self.port,
            "user": "tenant",
            "password": "",
            "database": "postgres",
            "slot": "strongroom_standin",
        }

    def close(self) -> None:
        """Stop it; its connections are shut, so a client still held by it is let go."""
        self._stopped.set()
        self._process.join(15)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._drain()

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(config: dict[str, Any], events: Any, stopped: Any) -> None:
    server = _Server(config, events, stopped)
    events.put(("port", server.port))
    server.run()


class _Server:
    """The listener, in the stand-in's process; events go to ``events``."""

    def __init__(self, config: dict[str, Any], events: Any, stopped: Any) -> None:
        self.play: Play = config["play"]
        self.slot_lsn: int = config["slot_lsn"]
        self.insert_lsn: int = config["insert_lsn"]
        self.segment_size: int = config["segment_size"]
        self.version: int = config["server_version_num"]
        self.system_identifier = "7390000000000000001"
        self.events = events
        self.stopped = stopped
        self._lock = threading.Lock()
        self._clients: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def run(self) -> None:
        self._accepting.join()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(10)
        self._listener.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(30)
            with self._lock:
                self._clients.append(client)
            self.events.put(("visit", datetime.now(UTC).replace(tzinfo=None)))
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            params = self._startup(client)
            replication = params.get("replication") in ("true", "1", "on", "database")
            _Session(self, client, replication).run()

    def _startup(self, client: socket.socket) -> dict[str, str]:
        while True:
            (length,) = struct.unpack("!I", _exactly(client, 4))
            body = _exactly(client, length - 4)
            (code,) = struct.unpack("!I", body[:4])
            if code in (80877103, 80877104):  # SSL or GSS encryption asked: no
                client.sendall(b"N")
                continue
            break
        fields = body[4:].split(b"\0")
        params = {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields) - 1, 2)}
        out = _message(b"R", struct.pack("!I", 0))  # authenticated, no password asked
        for name, value in (
            ("server_version", f"{self.version // 10000}.0"),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("TimeZone", "UTC"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
        ):
            out += _message(b"S", name.encode() + b"\0" + value.encode() + b"\0")
        out += _message(b"K", struct.pack("!II", 4242, 1)) + _message(b"Z", b"I")
        client.sendall(out)
        return params

    def reply(self, sql: str) -> Reply:
        """The answer to ``sql``, as a server would give it."""
        if sql.startswith("SELECT pg_catalog.current_setting('server_version_num')"):
            columns = [
                ("num", INT4),
                ("version", TEXT),
                ("seg", INT8),
                ("block", INT4),
                ("checksums", TEXT),
                ("bootstrap", TEXT),
                ("recovery", BOOL),
            ]
            row = (
                str(self.version),
                f"{self.version // 10000}.0",
                str(self.segment_size),
                "8192",
                "off",
                "postgres",
                "f",
            )
            return Rows(columns, [row])
        if sql.startswith("SELECT restart_lsn::text"):
            return Rows(
                [("lsn", TEXT), ("status", TEXT)], [(format_lsn(self.slot_lsn), "reserved")]
            )
        if sql.startswith("SELECT clock_timestamp(), pg_current_xact_id()"):
            now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
            return Rows([("now", TIMESTAMPTZ), ("xid", TEXT)], [(now, "750")])
        if sql.startswith("SELECT pg_current_wal_insert_lsn()"):
            return Rows([("lsn", TEXT)], [(format_lsn(self.insert_lsn),)])
        if sql.startswith("SELECT rolreplication, rolsuper"):
            return Rows([("r", BOOL), ("s", BOOL)], [("t", "t")])
        for setting, value in (
            ("SHOW server_version_num", str(self.version)),
            ("SHOW wal_level", "replica"),
            ("SHOW max_wal_senders", "10"),
            ("SHOW max_slot_wal_keep_size", "-1"),
        ):
            if sql == setting:
                return Rows([(setting.split()[1], TEXT)], [(value,)])
        if sql == "SELECT pg_is_in_recovery()":
            return Rows([("r", BOOL)], [("f",)])
        if sql.startswith("SELECT pg_create_physical_replication_slot") or sql.startswith(
            "SELECT pg_drop_replication_slot"
        ):
            return Rows([("r", TEXT)], [])
        return None


class _Session:
    def __init__(self, stand_in: _Server, client: socket.socket, replication: bool) -> None:
        self.stand_in = stand_in
        self.client = client
        self.replication = replication
        self.status = b"I"
        self.prepared = ""
        self.described: Reply = None

    def run(self) -> None:
        while not self.stand_in.stopped.is_set():
            kind = _exactly(self.client, 1)
            (length,) = struct.unpack("!I", _exactly(self.client, 4))
            body = _exactly(self.client, length - 4)
            if kind == b"X":
                return
            if kind == b"Q":
                sql = body[:-1].decode()
                self.stand_in.events.put(("statement", sql))
                if self.replication and sql.startswith("START_REPLICATION"):
                    self._replicate(sql)
                    return
                self.client.sendall(self._result(sql, self._answer(sql), describe=True))
                self.client.sendall(_message(b"Z", self.status))
            elif kind == b"P":
                self.prepared = body.split(b"\0", 2)[1].decode()
                self.client.sendall(_message(b"1", b""))
            elif kind == b"B":
                self.client.sendall(_message(b"2", b""))
            elif kind == b"D":
                self.stand_in.events.put(("statement", self.prepared))
                self.described = self._answer(self.prepared)
                if isinstance(self.described, Rows):
                    self.client.sendall(_row_description(self.described))
                else:
                    self.client.sendall(_message(b"n", b""))
            elif kind == b"E":
                self.client.sendall(self._result(self.prepared, self.described, describe=False))
            elif kind == b"S":
                self.client.sendall(_message(b"Z", self.status))
            elif kind == b"C":
                self.client.sendall(_message(b"3", b""))
            # anything else ("H": flush) needs no answer

    def _answer(self, sql: str) -> Reply:
        if self.replication and sql == "IDENTIFY_SYSTEM":
            columns = [("systemid", TEXT), ("timeline", INT4), ("xlogpos", TEXT), ("db", TEXT)]
            row = (self.stand_in.system_identifier, "1", format_lsn(self.stand_in.insert_lsn), None)
            return Rows(columns, [row])
        word = sql.split(None, 1)[0].upper() if sql.strip() else ""
        if word == "BEGIN":
            self.status = b"T"
        elif word in ("COMMIT", "ROLLBACK"):
            self.status = b"I"
        return self.stand_in.reply(sql)

    def _result(self, sql: str, reply: Reply, *, describe: bool) -> bytes:
        if isinstance(reply, Rows):
            out = _row_description(reply) if describe else b""
            for row in reply.rows:
                out += _data_row(row)
            return out + _message(b"C", f"SELECT {len(reply.rows)}".encode() + b"\0")
        tag = reply if isinstance(reply, str) else (sql.split(None, 1) or [""])[0].upper()
        return _message(b"C", tag.encode() + b"\0")

    def _replicate(self, sql: str) -> None:
        # START_REPLICATION SLOT <slot> PHYSICAL <lsn> TIMELINE <tli>
        words = sql.split()
        start = parse_lsn(words[words.index("PHYSICAL") + 1])
        self.client.sendall(_message(b"W", struct.pack("!bh", 0, 0)))
        self.client.settimeout(None)
        _play(self.stand_in.play, WalChannel(self.client, start, self.stand_in.stopped))


def _now_us() -> int:
    return int(time.time() * 1_000_000) - _PG_EPOCH_US


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def _row_description(rows: Rows) -> bytes:
    body = struct.pack("!h", len(rows.columns))
    for name, oid in rows.columns:
        body += name.encode() + b"\0" + struct.pack("!ihihih", 0, 0, oid, -1, -1, 0)
    return _message(b"T", body)


def _data_row(row: tuple[str | None, ...]) -> bytes:
    body = struct.pack("!h", len(row))
    for value in row:
        if value is None:
            body += struct.pack("!i", -1)
        else:
            raw = value.encode()
            body += struct.pack("!i", len(raw)) + raw
    return _message(b"D", body)


def _exactly(client: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        piece = client.recv(size - len(data))
        if not piece:
            raise ConnectionError("the client went away")
        data += piece
    return data
