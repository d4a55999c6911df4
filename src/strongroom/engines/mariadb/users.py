"""Trove's user, database and root calls on a managed MariaDB server.

The service works as its admin account through the socket in the instance's home; the
statements carry passwords, so none is binary-logged. A tenant's user gets
``ALL PRIVILEGES ON `db`.*`` for each granted database (wildcards escaped) and nothing
global; :mod:`accounts` refuses the server's and the service's names. ``root@'%'`` is the
one account with every privilege a tenant may enable: the server runs as the instance's
own OS user, so FILE reaches that user's files only.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pymysql

from strongroom.engines.base import (
    AccountInfo,
    Connection,
    DatabaseSpec,
    InstanceRequest,
    UserChanges,
    UserSpec,
)
from strongroom.engines.errors import AccountNotFoundError, EngineError, InvalidRequestError
from strongroom.engines.mariadb import accounts, config
from strongroom.engines.mariadb.sessions import managed_session, sql_error

ROOT_USER = "root"
# ER_UNKNOWN_CHARACTER_SET, ER_UNKNOWN_COLLATION, ER_COLLATION_CHARSET_MISMATCH
UNKNOWN_CHARSET_ERRORS = (1115, 1273, 1253)
_CHARSET = re.compile(r"[A-Za-z0-9_]{1,64}")  # names only: they go into the statement
ROOT_HOST = "%"


class MariaDbAccounts:
    """:class:`strongroom.engines.base.AccountManager` for managed MariaDB servers."""

    # -- users ------------------------------------------------------------------------
    def list_users(self, connection: Connection) -> list[AccountInfo]:
        with _session(connection) as cursor:
            return [
                AccountInfo(u["name"], u["host"], tuple(u["databases"]))
                for u in accounts.list_users(cursor)
            ]

    def create_users(self, connection: Connection, users: Sequence[UserSpec]) -> None:
        with _session(connection, secrets_=[u.password for u in users]) as cursor:
            wanted = {db for u in users for db in u.databases}
            missing = sorted(wanted - set(tenant_databases(cursor)))
            for name in missing:
                accounts.check_database(name)
            if missing:
                raise AccountNotFoundError("Database", missing[0])
            accounts.apply_request(cursor, InstanceRequest(name="", users=tuple(users)))
            _refresh(cursor, connection)

    def delete_user(self, connection: Connection, name: str, host: str) -> None:
        accounts.check_user(name, host)
        with _session(connection) as cursor:
            _require_user(cursor, name, host)
            cursor.execute("DROP USER %s@%s", (name, host))
            _refresh(cursor, connection)

    def change_passwords(self, connection: Connection, users: Sequence[UserSpec]) -> None:
        for user in users:
            accounts.check_user(user.name, user.host)
        with _session(connection, secrets_=[u.password for u in users]) as cursor:
            for user in users:
                _require_user(cursor, user.name, user.host)
            for user in users:
                cursor.execute(
                    "ALTER USER %s@%s IDENTIFIED BY %s", (user.name, user.host, user.password)
                )

    def update_user(
        self, connection: Connection, name: str, host: str, changes: UserChanges
    ) -> None:
        accounts.check_user(name, host)
        target, target_host = changes.name or name, changes.host or host
        accounts.check_user(target, target_host)
        password = [changes.password] if changes.password else []
        with _session(connection, secrets_=password) as cursor:
            _require_user(cursor, name, host)
            if (target, target_host.lower()) != (name, host.lower()):
                if any(_same(u, target, target_host) for u in accounts.list_users(cursor)):
                    raise InvalidRequestError(f"user {target!r}@{target_host!r} already exists")
                # Its privileges go with it.
                cursor.execute("RENAME USER %s@%s TO %s@%s", (name, host, target, target_host))
            if changes.password:
                cursor.execute(
                    "ALTER USER %s@%s IDENTIFIED BY %s", (target, target_host, changes.password)
                )
            _refresh(cursor, connection)

    def grant(self, connection: Connection, name: str, host: str, databases: Sequence[str]) -> None:
        accounts.check_user(name, host)
        for db in databases:
            accounts.check_database(db)
        with _session(connection) as cursor:
            _require_user(cursor, name, host)
            existing = set(tenant_databases(cursor))
            for db in databases:
                if db not in existing:
                    raise AccountNotFoundError("Database", db)
            for db in databases:
                cursor.execute(
                    f"GRANT ALL PRIVILEGES ON {accounts.grant_pattern(db)}.* TO %s@%s",
                    (name, host),
                )
            _refresh(cursor, connection)

    def revoke(self, connection: Connection, name: str, host: str, database: str) -> None:
        accounts.check_user(name, host)
        accounts.check_database(database)
        with _session(connection) as cursor:
            _require_user(cursor, name, host)
            granted: list[str] = next(
                (u["databases"] for u in accounts.list_users(cursor) if _same(u, name, host)), []
            )
            if database not in granted:
                raise AccountNotFoundError("Database", database)
            cursor.execute(
                f"REVOKE ALL PRIVILEGES ON {accounts.grant_pattern(database)}.* FROM %s@%s",
                (name, host),
            )
            _refresh(cursor, connection)

    # -- databases --------------------------------------------------------------------
    def list_databases(self, connection: Connection) -> list[str]:
        with _session(connection) as cursor:
            return tenant_databases(cursor)

    def create_databases(self, connection: Connection, databases: Sequence[DatabaseSpec]) -> None:
        for db in databases:
            accounts.check_database(db.name)
            for value in (db.character_set, db.collate):
                if value is not None and not _CHARSET.fullmatch(value):
                    raise InvalidRequestError(f"{value!r} is not a character set or collation")
        with _session(connection) as cursor:
            for db in databases:
                options = ""
                if db.character_set:
                    options += f" CHARACTER SET {db.character_set}"
                if db.collate:
                    options += f" COLLATE {db.collate}"
                statement = f"CREATE DATABASE IF NOT EXISTS {config.quote_identifier(db.name)}"
                try:
                    cursor.execute(statement + options)
                except pymysql.MySQLError as exc:
                    if exc.args and exc.args[0] in UNKNOWN_CHARSET_ERRORS:
                        raise InvalidRequestError(sql_error(exc)) from None
                    raise
            _refresh(cursor, connection)

    def delete_database(self, connection: Connection, name: str) -> None:
        accounts.check_database(name)
        with _session(connection) as cursor:
            if name not in tenant_databases(cursor):
                raise AccountNotFoundError("Database", name)
            cursor.execute(f"DROP DATABASE {config.quote_identifier(name)}")
            _refresh(cursor, connection)

    # -- root -------------------------------------------------------------------------
    def enable_root(self, connection: Connection, password: str | None = None) -> tuple[str, str]:
        password = password or secrets.token_urlsafe(24)
        with _session(connection, secrets_=[password]) as cursor:
            cursor.execute(
                "CREATE OR REPLACE USER %s@%s IDENTIFIED BY %s", (ROOT_USER, ROOT_HOST, password)
            )
            cursor.execute(
                "GRANT ALL PRIVILEGES ON *.* TO %s@%s WITH GRANT OPTION", (ROOT_USER, ROOT_HOST)
            )
        return ROOT_USER, password

    def disable_root(self, connection: Connection) -> None:
        with _session(connection) as cursor:
            cursor.execute("DROP USER IF EXISTS %s@%s", (ROOT_USER, ROOT_HOST))


@contextmanager
def _session(connection: Connection, *, secrets_: Sequence[str] = ()) -> Iterator[Any]:
    """An admin session with binary logging off; server errors become ``EngineError``
    cleaned of the service's and the request's passwords."""
    if not connection.get("managed"):
        raise EngineError("users and databases are managed on managed instances only")
    hidden = [str(connection.get("admin_password", "")), *secrets_]
    try:
        with managed_session(connection) as cursor:
            cursor.execute("SET SESSION sql_log_bin = 0")
            yield cursor
    except (pymysql.MySQLError, OSError) as exc:
        raise EngineError(f"the server refused: {sql_error(exc, hidden)}") from exc


def tenant_databases(cursor: Any) -> list[str]:
    cursor.execute("SHOW DATABASES")
    return sorted(
        str(row[0]) for row in cursor.fetchall() if str(row[0]) not in accounts.SYSTEM_DATABASES
    )


def _same(user: dict[str, Any], name: str, host: str) -> bool:
    return bool(user["name"] == name and str(user["host"]).lower() == host.lower())


def _require_user(cursor: Any, name: str, host: str) -> None:
    if not any(_same(u, name, host) for u in accounts.list_users(cursor)):
        raise AccountNotFoundError("User", f"{name}@{host}")


def _refresh(cursor: Any, connection: Connection) -> None:
    connection["users"] = accounts.list_users(cursor)
    connection["databases"] = tenant_databases(cursor)
