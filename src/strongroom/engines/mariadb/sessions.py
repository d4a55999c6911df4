"""SQL sessions with a MariaDB server: a managed one through its socket as the service's
admin account, an external one over TCP as its registered account. The stored connection
is read through its model (``models.CONNECTION``).

A managed server's socket lies in its home, which the instance's OS user owns: a tenant
that is superuser of its server can run programs as that user and put a listener of its
own (a stand-in) or a link in the socket's place. Every session therefore (see
:class:`BoundedConnection`) reaches the socket itself, never through a link; ends its
handshake, and each statement with its whole reply, within a deadline by the clock
(pymysql's ``read_timeout`` starts again with every byte, so a stand-in that trickles
bytes never meets it; :mod:`strongroom.engines.deadline` cuts the connection instead);
takes a bounded reply; and never answers an authentication plugin that would give the
password away.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import pymysql
from pymysql.constants import CR
from pymysql.protocol import FieldDescriptorPacket, MysqlPacket

from strongroom.engines import deadline as deadlines
from strongroom.engines.mariadb.models import (
    CONNECTION,
    Address,
    ExternalConnection,
    ManagedConnection,
)
from strongroom.engines.mariadb.tools import scrub

CONNECT_TIMEOUT = 10  # reaching the socket or port
READ_TIMEOUT = 60.0  # any one read, unless a caller lets its statements run longer
WRITE_TIMEOUT = 60  # sending a statement, as a whole
# By the clock, whatever the other end sends: the handshake (authentication included)…
HANDSHAKE_DEADLINE = 30.0
# …and each statement with its whole reply, unless the caller gives its own.
STATEMENT_DEADLINE = 660.0
# What one reply may bring in: bytes over the wire, values (rows times columns) and
# columns. The service reads small results only (its accounts, a list of tables).
MAX_REPLY_BYTES = 32 << 20
MAX_REPLY_VALUES = 500_000
MAX_REPLY_COLUMNS = 4096
MAX_REPLIES = 1000  # results of one statement (a procedure's); a chain of them ends too
# Authentication plugins that never give the password away: the protocol's own scramble
# ("" when the server names none) and mysql_native_password, which the service's accounts
# use (IDENTIFIED BY), and client_ed25519, which signs the server's challenge. The others
# send the password itself (mysql_clear_password, dialog), or may send it to whoever
# answers (sha256_password and caching_sha2_password: in clear on a socket, else under a
# key the other end chooses), or a hash as good as it (mysql_old_password).
AUTH_PLUGINS = frozenset({"", "mysql_native_password", "client_ed25519"})

if TYPE_CHECKING:
    _Connection = pymysql.connections.Connection[pymysql.cursors.Cursor]
else:
    _Connection = pymysql.connections.Connection


def _lost(message: str) -> Exception:
    return pymysql.err.OperationalError(CR.CR_SERVER_LOST, message)


class BoundedConnection(_Connection):
    """A pymysql connection whatever the other end is: it reaches a socket without
    following a link, ends its handshake within ``handshake_deadline`` seconds and each
    reply within ``deadline`` (the connection is cut, ``OperationalError``), reads no reply
    larger than ``max_reply_bytes`` or :data:`MAX_REPLY_VALUES`, and refuses any
    authentication plugin but :data:`AUTH_PLUGINS`. Made by :func:`connect`."""

    deadline: float = STATEMENT_DEADLINE
    handshake_deadline: float = HANDSHAKE_DEADLINE
    max_reply_bytes: int | None = MAX_REPLY_BYTES
    # pymysql's own state, named here for the type checker.
    _sock: socket.socket | None
    _auth_plugin_name: str | None
    _reply_bytes = 0
    _reply_values = 0
    _reply_columns = 0
    _replies = 0
    _statement_ends = 0.0

    def connect(self, sock: socket.socket | None = None) -> None:
        if sock is None:
            if self.unix_socket:
                sock = _reach_socket(str(self.unix_socket), self.connect_timeout)
                self.host_info = "Localhost via UNIX socket"
            else:
                sock = _reach_host(self.host, self.port, self.connect_timeout)
                self.host_info = f"socket {self.host}:{self.port}"
        self._new_reply()
        with deadlines.answered_within(sock.fileno(), self.handshake_deadline, error=_lost):
            try:
                super().connect(sock)
            except pymysql.err.OperationalError:
                raise
            except (pymysql.MySQLError, ValueError, IndexError, struct.error) as exc:
                # What a server never sends (a version that is no number, a short packet):
                # an error callers already handle, not one that escapes them.
                sock.close()
                raise _lost(f"the server's handshake is malformed ({type(exc).__name__})") from exc

    def answered_within(
        self, seconds: float, *, error: Callable[[str], Exception] = _lost
    ) -> contextlib.AbstractContextManager[None]:
        """What waits on the server within the block ends after ``seconds``: the
        connection is cut and ``error`` raised (see :mod:`strongroom.engines.deadline`)."""
        if self._sock is None:
            raise pymysql.err.InterfaceError(0, "the connection is closed")
        return deadlines.answered_within(self._sock.fileno(), seconds, error=error)

    # Authentication: the plugin the server's greeting names, then any it switches to.
    def _request_authentication(self) -> None:
        _check_plugin(self._auth_plugin_name)
        super()._request_authentication()  # type: ignore[misc]

    def _process_auth(self, plugin_name: bytes | str, auth_packet: Any, handler: Any = None) -> Any:
        _check_plugin(plugin_name)
        return super()._process_auth(plugin_name, auth_packet, handler)  # type: ignore[misc]

    # Every command's reply is read here: a result (query, next_result) or an OK packet.
    # The deadline is the statement's, not each reply's: a server may chain "more results"
    # replies (read by next_result, and by a cursor's close) as long as it likes.
    def _read_query_result(self, unbuffered: bool = False) -> int:
        if unbuffered:
            raise pymysql.err.NotSupportedError("a reply is read whole, within its deadline")
        self._replies += 1
        if self._replies > MAX_REPLIES:
            self._refuse(f"the server sent more than {MAX_REPLIES} results for one statement")
        with self.answered_within(self._time_left(), error=self._late):
            return super()._read_query_result()  # type: ignore[misc]

    def _read_ok_packet(self) -> Any:
        with self.answered_within(self._time_left(), error=self._late):
            return super()._read_ok_packet()  # type: ignore[misc]

    def _execute_command(self, command: int, sql: str | bytes) -> None:
        self._new_reply()
        self._replies = 0
        self._statement_ends = time.monotonic() + self.deadline
        super()._execute_command(command, sql)  # type: ignore[misc]

    def _time_left(self) -> float:
        left = self._statement_ends - time.monotonic()
        if left <= 0:
            self._force_close()  # type: ignore[attr-defined]
            raise self._late("")
        return left

    def _late(self, _message: str) -> Exception:
        return _lost(f"the server did not answer within {self.deadline:.0f} s")

    def _new_reply(self) -> None:
        self._reply_bytes = self._reply_values = self._reply_columns = 0

    def _read_bytes(self, num_bytes: int) -> bytes:
        # Before the read: a packet's header may announce up to 16 MiB.
        self._reply_bytes += num_bytes
        if self.max_reply_bytes is not None and self._reply_bytes > self.max_reply_bytes:
            self._refuse(f"the server's reply is larger than {self.max_reply_bytes} bytes")
        return super()._read_bytes(num_bytes)  # type: ignore[misc]

    def _read_packet(self, packet_type: Any = MysqlPacket) -> Any:
        packet = super()._read_packet(packet_type)
        if packet_type is FieldDescriptorPacket:
            self._reply_columns += 1
            if self._reply_columns > MAX_REPLY_COLUMNS:
                self._refuse(f"the server's reply has more than {MAX_REPLY_COLUMNS} columns")
        else:
            # A row holds at most as many values as its result has columns.
            self._reply_values += max(1, self._reply_columns)
            if self._reply_values > MAX_REPLY_VALUES:
                self._refuse(f"the server's reply holds more than {MAX_REPLY_VALUES} values")
        return packet

    def _refuse(self, message: str) -> NoReturn:
        self._force_close()  # type: ignore[attr-defined]
        raise pymysql.err.OperationalError(CR.CR_NET_PACKET_TOO_LARGE, message)


def _check_plugin(name: bytes | str | None) -> None:
    text = name.decode("ascii", "replace") if isinstance(name, bytes) else (name or "")
    if text not in AUTH_PLUGINS:
        raise pymysql.err.OperationalError(
            CR.CR_AUTH_PLUGIN_CANNOT_LOAD,
            f"the server asked for the authentication plugin {text[:64]!r}, which could "
            "give the password away: refused",
        )


def _reach_socket(path: str, timeout: float | None) -> socket.socket:
    """A connection to the socket at ``path`` itself: a link in its place is refused, not
    followed (the connection goes to the descriptor opened here, by its /proc name)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise pymysql.err.OperationalError(
            CR.CR_CONNECTION_ERROR, f"the server's socket cannot be reached: {exc.strerror}"
        ) from None
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise pymysql.err.OperationalError(
                CR.CR_CONNECTION_ERROR,
                "the server's socket is a link or not a socket: it is not used",
            )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(f"/proc/self/fd/{fd}")
        except OSError as exc:
            sock.close()
            raise pymysql.err.OperationalError(
                CR.CR_CONNECTION_ERROR,
                f"cannot connect to the server's socket: {exc.strerror or exc}",
            ) from None
        return sock
    finally:
        os.close(fd)


def _reach_host(host: str, port: int, timeout: float | None) -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout)
    except OSError as exc:
        raise pymysql.err.OperationalError(
            CR.CR_CONN_HOST_ERROR, f"cannot connect to {host}:{port}: {exc.strerror or exc}"
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def connect(
    user: str,
    password: str,
    *,
    unix_socket: str | None = None,
    host: str = "localhost",
    port: int = 3306,
    read_timeout: float = READ_TIMEOUT,
    deadline: float | None = None,
    handshake_deadline: float | None = None,
) -> BoundedConnection:
    """A :class:`BoundedConnection` to the server at ``unix_socket``, else ``host:port``:
    each reply within ``deadline`` seconds (:data:`STATEMENT_DEADLINE` by default), the
    handshake within ``handshake_deadline`` (:data:`HANDSHAKE_DEADLINE`, or ``deadline``
    when shorter)."""
    conn = BoundedConnection(
        user=user,
        password=password,
        unix_socket=unix_socket,
        host=host,
        port=port,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        write_timeout=WRITE_TIMEOUT,
        autocommit=True,
        charset="utf8mb4",
        defer_connect=True,
    )
    conn.deadline = STATEMENT_DEADLINE if deadline is None else deadline
    if handshake_deadline is None:
        handshake_deadline = min(HANDSHAKE_DEADLINE, conn.deadline)
    conn.handshake_deadline = handshake_deadline
    conn.max_reply_bytes = MAX_REPLY_BYTES
    conn.connect()
    return conn


def _typed(connection: Mapping[str, Any]) -> ManagedConnection | ExternalConnection:
    return CONNECTION.validate_python(dict(connection))


@contextlib.contextmanager
def session(
    connection: Mapping[str, Any],
    user: str,
    password: str,
    *,
    read_timeout: float | None = None,
    deadline: float | None = None,
) -> Iterator[Any]:
    """A cursor on the server. Each statement ends within ``deadline`` seconds: by default
    :data:`STATEMENT_DEADLINE`, or ``read_timeout`` (how long the server may stay silent)
    when a caller lets its statements run longer."""
    where = Address.model_validate(dict(connection))
    if deadline is None:
        deadline = max(STATEMENT_DEADLINE, read_timeout or 0)
    conn = connect(
        user,
        password,
        unix_socket=where.socket_path,
        host=where.host,
        port=where.port,
        read_timeout=READ_TIMEOUT if read_timeout is None else read_timeout,
        deadline=deadline,
    )
    try:
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


def managed_session(
    connection: Mapping[str, Any],
    *,
    read_timeout: float | None = None,
    deadline: float | None = None,
) -> contextlib.AbstractContextManager[Any]:
    server = _typed(connection)
    if not isinstance(server, ManagedConnection):
        raise ValueError("not a managed server's connection")
    return session(
        connection,
        server.admin_user,
        server.admin_password,
        read_timeout=read_timeout,
        deadline=deadline,
    )


def external_session(connection: Mapping[str, Any]) -> contextlib.AbstractContextManager[Any]:
    server = _typed(connection)
    if not isinstance(server, ExternalConnection):
        raise ValueError("not an external server's connection")
    return session(connection, server.user, server.password)


def sql_error(exc: Exception, secret_values: Sequence[str] = ()) -> str:
    """The server's message and code, without any of ``secret_values``."""
    if isinstance(exc, pymysql.MySQLError) and len(exc.args) >= 2:
        text = f"{exc.args[1]} (error {exc.args[0]})"
    else:
        text = str(exc)
    return scrub(text, secret_values)
