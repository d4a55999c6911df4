"""Accounts of a managed server: the service's own, and the users and databases a request asks for.

The service logs in as ``strongroom_admin`` (all privileges) and backs up as
``strongroom_backup`` (what mariabackup needs, nothing more); both are local to the host.
A request's users get ``ALL PRIVILEGES ON `db`.*`` for each of their databases and nothing
else: no global privilege (FILE, SUPER, PROCESS…), no GRANT OPTION. Names the server or the
service uses are refused before anything is created, and an account that already exists
(in a restored data directory) is never altered.
"""

from __future__ import annotations

import re
from typing import Any

from strongroom.engines.base import InstanceRequest
from strongroom.engines.errors import InvalidRequestError
from strongroom.engines.mariadb import config

ADMIN_USER = "strongroom_admin"
BACKUP_USER = "strongroom_backup"
ACCOUNT_HOST = "localhost"
# What mariabackup needs on MariaDB 10.5+ (BINLOG MONITOR was REPLICATION CLIENT).
BACKUP_PRIVILEGES = ("RELOAD", "PROCESS", "LOCK TABLES", "BINLOG MONITOR")
SYSTEM_USERS = frozenset({"root", "mysql", "mariadb.sys", "public"})
SYSTEM_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
RESERVED_PREFIXES = ("strongroom_", "mysql.", "sr-")
# The accounts mariadb-install-db makes for an instance's OS user (identity.name_for).
OS_USER_ACCOUNT = "^sr-[0-9a-f]{12}$"
MAX_USER_NAME = 80  # mysql.global_priv.User
MAX_HOST = 255
# Trove's user host: an optional leading and trailing "%" around a name or address
# ("%", "%.example.com", "192.168.0.%", "db-1.example.com").
_HOST = re.compile(r"%?[A-Za-z0-9_.\-]*%?")


def check_request(request: InstanceRequest) -> None:
    """Refuse reserved or malformed user names, hosts and databases (InvalidRequestError)."""
    seen: set[tuple[str, str]] = set()
    for user in request.users:
        check_user(user.name, user.host)
        account = (user.name, user.host.lower())
        if account in seen:
            raise InvalidRequestError(f"the user {user.name!r}@{user.host!r} is listed twice")
        seen.add(account)
    for name in database_names(request):
        check_database(name)


def check_user(name: str, host: str) -> None:
    if not name or len(name) > MAX_USER_NAME or _has_control(name) or name != name.strip():
        raise InvalidRequestError(
            f"the user name {name!r} is not allowed (1 to {MAX_USER_NAME} characters, "
            "no control characters or surrounding spaces)"
        )
    lowered = name.lower()
    if lowered in SYSTEM_USERS or lowered.startswith(RESERVED_PREFIXES):
        raise InvalidRequestError(f"the user name {name!r} is reserved")
    if not host or len(host) > MAX_HOST or not _HOST.fullmatch(host):
        raise InvalidRequestError(
            f"the user host {host!r} is not allowed (a host name or address, "
            "optionally with a leading or trailing %)"
        )


def check_database(name: str) -> None:
    try:
        config.check_identifier(name, "database name")
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None
    if "%" in name:
        # A wildcard in GRANT: `%`.* is every database, the server's own included.
        raise InvalidRequestError(f"the database name {name!r} has characters that are not allowed")
    if name.lower() in SYSTEM_DATABASES:
        raise InvalidRequestError(f"the database name {name!r} is reserved")


def database_names(request: InstanceRequest) -> list[str]:
    names = {db.name for db in request.databases}
    for user in request.users:
        names.update(user.databases)
    return sorted(names)


def _has_control(text: str) -> bool:
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)


def service_accounts_sql(admin_password: str, backup_password: str) -> str:
    """The init file that (re)creates the service's accounts with new passwords."""
    admin = f"{config.sql_string(ADMIN_USER)}@{config.sql_string(ACCOUNT_HOST)}"
    backup = f"{config.sql_string(BACKUP_USER)}@{config.sql_string(ACCOUNT_HOST)}"
    return "\n".join(
        [
            "SET SESSION sql_log_bin = 0;",
            f"CREATE OR REPLACE USER {admin} IDENTIFIED BY {config.sql_string(admin_password)};",
            f"GRANT ALL PRIVILEGES ON *.* TO {admin} WITH GRANT OPTION;",
            f"CREATE OR REPLACE USER {backup} IDENTIFIED BY {config.sql_string(backup_password)};",
            f"GRANT {', '.join(BACKUP_PRIVILEGES)} ON *.* TO {backup};",
            "",
        ]
    )


def drop_os_user_accounts(cursor: Any) -> None:
    """mariadb-install-db gives the OS user it ran for a password-less superuser account
    (unix_socket); a restored data directory has its source's. Nothing needs them: any
    process of the instance's OS user could log in as superuser with one."""
    cursor.execute("SET SESSION sql_log_bin = 0")
    cursor.execute(
        "SELECT User FROM mysql.global_priv WHERE Host = 'localhost' AND User REGEXP %s",
        (OS_USER_ACCOUNT,),
    )
    for (name,) in cursor.fetchall():
        cursor.execute("DROP USER %s@'localhost'", (name,))


def apply_request(cursor: Any, request: InstanceRequest) -> None:
    """Create the request's databases and users (not binary-logged: the statements carry
    passwords). Raises InvalidRequestError for a refused name or an existing account."""
    check_request(request)
    cursor.execute("SET SESSION sql_log_bin = 0")
    for user in request.users:
        cursor.execute(
            "SELECT COUNT(*) FROM mysql.global_priv WHERE User = %s AND Host = %s",
            (user.name, user.host),
        )
        if cursor.fetchone()[0]:
            raise InvalidRequestError(
                f"the user {user.name!r}@{user.host!r} already exists; existing accounts "
                "are not changed"
            )
    for name in database_names(request):
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS {config.quote_identifier(name)}")
    for user in request.users:
        cursor.execute("CREATE USER %s@%s IDENTIFIED BY %s", (user.name, user.host, user.password))
        for name in user.databases:
            cursor.execute(
                f"GRANT ALL PRIVILEGES ON {grant_pattern(name)}.* TO %s@%s",
                (user.name, user.host),
            )


def grant_pattern(name: str) -> str:
    """``name`` quoted for GRANT, where ``_`` and ``%`` are wildcards: escaped, so that
    ``mysq_`` means that database only, not ``mysql`` too."""
    return config.quote_identifier(name).replace("_", "\\_").replace("%", "\\%")


def list_users(cursor: Any) -> list[dict[str, Any]]:
    """The tenant's accounts (not the server's or the service's) and their databases."""
    cursor.execute("SELECT User, Host FROM mysql.user WHERE is_role = 'N' ORDER BY User, Host")
    users: list[dict[str, Any]] = []
    for name, host in cursor.fetchall():
        lowered = str(name).lower()
        if not name or lowered in SYSTEM_USERS or lowered.startswith(RESERVED_PREFIXES):
            continue
        cursor.execute(
            "SELECT Db FROM mysql.db WHERE User = %s AND Host = %s ORDER BY Db", (name, host)
        )
        users.append(
            {
                "name": name,
                "host": host,
                "databases": [_unescape(row[0]) for row in cursor.fetchall()],
            }
        )
    return users


def _unescape(pattern: str) -> str:
    return pattern.replace("\\_", "_").replace("\\%", "%")
