"""SQL sessions with a MariaDB server: a managed one through its socket as the service's
admin account, an external one over TCP as its registered account. The stored connection
is read through its model (``models.CONNECTION``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pymysql

from strongroom.engines.mariadb.models import (
    CONNECTION,
    Address,
    ExternalConnection,
    ManagedConnection,
)
from strongroom.engines.mariadb.tools import scrub


def _typed(connection: Mapping[str, Any]) -> ManagedConnection | ExternalConnection:
    return CONNECTION.validate_python(dict(connection))


@contextlib.contextmanager
def session(
    connection: Mapping[str, Any], user: str, password: str, *, read_timeout: float = 60
) -> Iterator[Any]:
    where = Address.model_validate(dict(connection))
    kwargs: dict[str, Any] = {
        "user": user,
        "password": password,
        "connect_timeout": 10,
        "read_timeout": read_timeout,
        "write_timeout": 60,
        "autocommit": True,
        "charset": "utf8mb4",
    }
    if where.socket_path:
        kwargs["unix_socket"] = where.socket_path
    else:
        kwargs["host"] = where.host
        kwargs["port"] = where.port
    conn = pymysql.connect(**kwargs)
    try:
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


def managed_session(
    connection: Mapping[str, Any], *, read_timeout: float = 60
) -> contextlib.AbstractContextManager[Any]:
    server = _typed(connection)
    if not isinstance(server, ManagedConnection):
        raise ValueError("not a managed server's connection")
    return session(connection, server.admin_user, server.admin_password, read_timeout=read_timeout)


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
