"""SQL sessions with a MariaDB server: a managed one through its socket as the service's
admin account, an external one over TCP as its registered account."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pymysql

from strongroom.engines.mariadb.tools import scrub


@contextlib.contextmanager
def session(
    connection: Mapping[str, Any], user: str, password: str, *, read_timeout: float = 60
) -> Iterator[Any]:
    kwargs: dict[str, Any] = {
        "user": user,
        "password": password,
        "connect_timeout": 10,
        "read_timeout": read_timeout,
        "write_timeout": 60,
        "autocommit": True,
        "charset": "utf8mb4",
    }
    if connection.get("managed") and connection.get("socket"):
        kwargs["unix_socket"] = str(connection["socket"])
    else:
        kwargs["host"] = str(connection["host"])
        kwargs["port"] = int(connection["port"])
    conn = pymysql.connect(**kwargs)
    try:
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


def managed_session(
    connection: Mapping[str, Any], *, read_timeout: float = 60
) -> contextlib.AbstractContextManager[Any]:
    return session(
        connection,
        str(connection["admin_user"]),
        str(connection["admin_password"]),
        read_timeout=read_timeout,
    )


def external_session(connection: Mapping[str, Any]) -> contextlib.AbstractContextManager[Any]:
    return session(connection, str(connection["user"]), str(connection["password"]))


def sql_error(exc: Exception, secret_values: Sequence[str] = ()) -> str:
    """The server's message and code, without any of ``secret_values``."""
    if isinstance(exc, pymysql.MySQLError) and len(exc.args) >= 2:
        text = f"{exc.args[1]} (error {exc.args[0]})"
    else:
        text = str(exc)
    return scrub(text, secret_values)
