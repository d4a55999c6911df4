"""A stand-in on a MariaDB server's socket, as a tenant that runs programs as its instance's
OS user can put one there: it speaks the client protocol as far as a test needs, misbehaves
where the test says (a reply that trickles a byte at a time, rows without end, an
authentication plugin that asks for the password itself), and records what it was sent."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Field types the tests' results use.
LONGLONG = 8
DATETIME = 12
VAR_STRING = 253

COM_QUIT = 0x01
COM_QUERY = 0x03
COM_BINLOG_DUMP = 0x12
# LONG_PASSWORD, CONNECT_WITH_DB, PROTOCOL_41, TRANSACTIONS, SECURE_CONNECTION,
# MULTI_RESULTS, PLUGIN_AUTH
CAPABILITIES = 0x1 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x20000 | 0x80000
AUTOCOMMIT = 0x2
MAX_PAYLOAD = 0xFFFFFF
SEND_CHUNK = 64 << 10


@dataclass(frozen=True)
class Result:
    """A result set: ``(name, field type)`` columns and rows of raw values (None: NULL);
    ``rows`` may go on as long as it likes."""

    columns: list[tuple[str, int]]
    rows: Iterable[tuple[bytes | None, ...]]


class Trickle:
    """A reply that starts and then comes a byte at a time, never ending."""


class MoreResults:
    """A reply of OK packets each saying another result follows, one every ``interval``,
    never ending."""


TRICKLE = Trickle()
MORE_RESULTS = MoreResults()
Reply = Result | Trickle | MoreResults | None  # None: an OK packet
Answer = Callable[[str], Reply]


def ok_to_everything(sql: str) -> Reply:
    return None


class StandIn:
    """A listener at ``path`` answering as a MariaDB server would, within what a test sets:

    ``trickle_greeting``: the greeting trickles; ``greeting_plugin``: the authentication
    plugin the greeting names (``caching_sha2_password`` then asks for full
    authentication); ``switch_to``: the plugin it then switches to (``dialog`` prompts for
    the password); ``answer``: the reply to each statement; ``trickle_dump``: a binary log
    dump trickles; ``version``: the server version the greeting names. ``received`` holds
    every byte any client sent."""

    def __init__(
        self,
        path: Path,
        *,
        answer: Answer = ok_to_everything,
        greeting_plugin: str = "mysql_native_password",
        switch_to: str | None = None,
        trickle_greeting: bool = False,
        trickle_dump: bool = False,
        interval: float = 0.05,
        version: bytes = b"10.11.19-MariaDB-log",
    ) -> None:
        self.path = path
        self.version = version
        self.answer = answer
        self.greeting_plugin = greeting_plugin
        self.switch_to = switch_to
        self.trickle_greeting = trickle_greeting
        self.trickle_dump = trickle_dump
        self.interval = interval
        self.received = bytearray()
        self.statements: list[str] = []
        self.connections = 0
        self.sent = 0
        self.hung_up = False  # a client went away while a reply was still being sent
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._clients: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def close(self) -> None:
        self._stop.set()
        self._accepting.join(10)
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(10)
        for client in clients:
            client.close()
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(30)
            with self._lock:
                self.connections += 1
                self._clients.append(client)
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        wire = _Wire(client, self)
        with contextlib.suppress(OSError, ConnectionError):
            if self.trickle_greeting:
                wire.trickle(0)
                return
            wire.send(0, _greeting(self.greeting_plugin, self.version))
            seq, _ = wire.read()  # the handshake response
            if self.greeting_plugin == "caching_sha2_password":
                wire.send(seq + 1, b"\x01\x04")  # fast path failed: full authentication
                seq, _ = wire.read()
            if self.switch_to is not None:
                data = b"\x05Password: " if self.switch_to == "dialog" else b""
                wire.send(seq + 1, b"\xfe" + self.switch_to.encode() + b"\0" + data)
                seq, _ = wire.read()
            wire.send(seq + 1, _OK)
            while not self._stop.is_set():
                _, packet = wire.read()
                command = packet[:1][0] if packet else COM_QUIT
                if command == COM_QUIT:
                    return
                if command == COM_BINLOG_DUMP and self.trickle_dump:
                    wire.trickle(1)
                    return
                if command != COM_QUERY:
                    wire.send(1, _error(1047, "Unknown command"))
                    continue
                sql = packet[1:].decode("utf-8", "replace")
                self.statements.append(sql)
                reply = self.answer(sql)
                if isinstance(reply, Trickle):
                    wire.trickle(1)
                    return
                if isinstance(reply, MoreResults):
                    wire.more_results(1)
                    return
                if reply is None:
                    wire.send(1, _OK)
                else:
                    wire.result(reply)


class _Wire:
    def __init__(self, client: socket.socket, stand_in: StandIn) -> None:
        self.client = client
        self.stand_in = stand_in

    def read(self) -> tuple[int, bytes]:
        header = self._exactly(4)
        length = int.from_bytes(header[:3], "little")
        return header[3], self._exactly(length)

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            piece = self.client.recv(size - len(data))
            if not piece:
                raise ConnectionError("the client went away")
            self.stand_in.received += piece
            data += piece
        return data

    def send(self, seq: int, payload: bytes) -> None:
        self.client.sendall(b"".join(_frames(seq, payload)))

    def trickle(self, seq: int) -> None:
        """A packet that says it is as long as a packet can be, then a byte now and then."""
        self.client.sendall(MAX_PAYLOAD.to_bytes(3, "little") + bytes([seq]))
        while not self.stand_in._stop.wait(self.stand_in.interval):
            self.client.sendall(b"x")

    def more_results(self, seq: int) -> None:
        """OK packets that each announce another result, one every interval."""
        more = b"\x00\x00\x00" + struct.pack("<HH", AUTOCOMMIT | MORE_RESULTS_EXIST, 0)
        while True:
            self.send(seq, more)
            seq = (seq + 1) % 256
            if self.stand_in._stop.wait(self.stand_in.interval):
                return

    def result(self, result: Result) -> None:
        buffer = bytearray()
        seq = 1
        try:
            for payload in _result_packets(result):
                for frame in _frames(seq, payload):
                    buffer += frame
                    seq = (seq + 1) % 256
                if len(buffer) >= SEND_CHUNK:
                    self._flush(buffer)
            self._flush(buffer)
        except (BrokenPipeError, ConnectionResetError):
            self.stand_in.hung_up = True
            raise

    def _flush(self, buffer: bytearray) -> None:
        self.client.sendall(buffer)
        self.stand_in.sent += len(buffer)
        buffer.clear()


def _frames(seq: int, payload: bytes) -> Iterator[bytes]:
    """``payload`` as protocol packets: 16 MiB pieces, ending with a shorter one."""
    while True:
        piece, payload = payload[:MAX_PAYLOAD], payload[MAX_PAYLOAD:]
        yield len(piece).to_bytes(3, "little") + bytes([seq % 256]) + piece
        seq += 1
        if len(piece) < MAX_PAYLOAD:
            return


def _lenenc_int(value: int) -> bytes:
    if value < 251:
        return bytes([value])
    if value < 1 << 16:
        return b"\xfc" + struct.pack("<H", value)
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    return b"\xfe" + struct.pack("<Q", value)


def _lenenc_str(value: bytes) -> bytes:
    return _lenenc_int(len(value)) + value


def _greeting(plugin: str, version: bytes) -> bytes:
    salt = os.urandom(20).replace(b"\0", b"\1")
    return (
        b"\x0a"
        + version
        + b"\0"
        + struct.pack("<I", 7)
        + salt[:8]
        + b"\0"
        + struct.pack("<H", CAPABILITIES & 0xFFFF)
        + bytes([45])  # utf8mb4_general_ci
        + struct.pack("<H", AUTOCOMMIT)
        + struct.pack("<H", CAPABILITIES >> 16)
        + bytes([21])
        + b"\0" * 10
        + salt[8:]
        + b"\0"
        + plugin.encode()
        + b"\0"
    )


MORE_RESULTS_EXIST = 0x0008  # SERVER_MORE_RESULTS_EXISTS
_OK = b"\x00\x00\x00" + struct.pack("<HH", AUTOCOMMIT, 0)
_EOF = b"\xfe" + struct.pack("<HH", 0, AUTOCOMMIT)


def _error(code: int, message: str) -> bytes:
    return b"\xff" + struct.pack("<H", code) + b"#HY000" + message.encode()


def _column(name: str, field_type: int) -> bytes:
    return (
        _lenenc_str(b"def")
        + _lenenc_str(b"")
        + _lenenc_str(b"")
        + _lenenc_str(b"")
        + _lenenc_str(name.encode())
        + _lenenc_str(name.encode())
        + b"\x0c"
        + struct.pack("<HIBHB", 45, 1 << 20, field_type, 0, 0)
        + b"\0\0"
    )


def _result_packets(result: Result) -> Iterator[bytes]:
    yield _lenenc_int(len(result.columns))
    for name, field_type in result.columns:
        yield _column(name, field_type)
    yield _EOF
    for row in result.rows:
        yield b"".join(b"\xfb" if value is None else _lenenc_str(value) for value in row)
    yield _EOF
