"""Whether a pooled PostgreSQL connection is still alive, told without a round trip when
it was in use a moment ago.

SQLAlchemy's ``pool_pre_ping`` sends a ``SELECT 1`` at every checkout: a round trip for
each request of the API, which cost a fifth to a quarter of a one-backup read with the
metadata on PostgreSQL. A server that ends a connection (a restart, a shutdown, a
terminated backend, a crash of the server process) sends its last message or closes the
socket, so the idle socket turns readable: that connection is discarded at checkout, with
no round trip. A connection idle for longer than ``PING_AFTER_IDLE`` is pinged, as
before: its server may have gone without a word (a host restarted, a network cut).

What this gives up: a connection idle for less than that, whose server went without a
word, fails the step that gets it (``OperationalError``); the engine then replaces every
connection of the pool, so the steps after it do not. With the pool handing out the
connection used last (LIFO), connections in use stay within that window, and the others
are pinged when they are taken again.

An idle connection receives nothing but its server's farewell, as long as it does not
LISTEN: a connection that did would be discarded at each notification (none does)."""

from __future__ import annotations

import select
import time
from typing import Any

import psycopg
from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

PING_AFTER_IDLE = 5.0  # seconds in the pool after which a checkout pings
_IDLE_SINCE = "strongroom.idle_since"  # in the pool entry's info


def watch(engine: Engine) -> None:
    """Check the connections of ``engine`` (psycopg) at checkout, as described above."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, entry: ConnectionPoolEntry) -> None:
        entry.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(
        dbapi_connection: Any, entry: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        idle_since = entry.info.pop(_IDLE_SINCE, None)
        if idle_since is None:
            return  # connected just now
        try:
            spoke = readable(dbapi_connection.pgconn.socket)
        except psycopg.OperationalError as exc:  # the connection is lost, or closed
            raise DisconnectionError(f"metadata connection closed: {exc}") from exc
        if spoke:  # the server's last words, or the end of the connection
            raise DisconnectionError("the metadata server ended this connection")
        if time.monotonic() - idle_since > PING_AFTER_IDLE:
            try:
                dialect.do_ping(dbapi_connection)
            except psycopg.Error as exc:
                raise DisconnectionError(f"metadata connection lost: {exc}") from exc


def readable(fd: int) -> bool:
    """Whether ``fd`` has something to read (or its end) now, without waiting."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))
