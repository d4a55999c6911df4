"""Trove's user, database and root calls on a managed PostgreSQL server.

The service works as the server's bootstrap superuser through the socket in the instance's
home. A tenant's user is a login role with :data:`accounts.CREATED_ROLE_OPTIONS`; its
databases are those it may ``CREATE`` in (``GRANT ALL ON DATABASE``). A database made here
is closed to ``PUBLIC`` (PostgreSQL lets every role connect to every database by default),
so a user reaches only the databases granted to it. ``root`` is the one superuser a tenant
may enable: it runs as the instance's own OS user, which the home confines.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from strongroom.engines.base import (
    AccountInfo,
    Connection,
    DatabaseSpec,
    InstanceRequest,
    UserChanges,
    UserSpec,
)
from strongroom.engines.errors import AccountNotFoundError, EngineError, InvalidRequestError
from strongroom.engines.postgresql import accounts, names, session

ROOT_USER = "root"
SCHEMA_GRANTS = (
    "GRANT ALL ON SCHEMA public TO {}",
    "GRANT ALL ON ALL TABLES IN SCHEMA public TO {}",
    "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {}",
)
SCHEMA_REVOKES = (
    "REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}",
    "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}",
    "REVOKE ALL ON SCHEMA public FROM {}",
)
_TENANT_ROLES = (
    "SELECT rolname FROM pg_roles WHERE rolcanlogin AND NOT rolsuper "
    "AND rolname <> %s AND rolname NOT LIKE 'pg\\_%%' AND rolname NOT LIKE 'strongroom%%' "
    "ORDER BY rolname"
)
_TENANT_DATABASES = (
    "SELECT datname FROM pg_database WHERE datallowconn "
    "AND datname NOT IN ('postgres', 'template0', 'template1') ORDER BY datname"
)


def check_user(name: str, host: str = "%") -> None:
    names.check_user(name)
    if name.lower() == ROOT_USER:
        raise InvalidRequestError(f"user name {name!r} is reserved")
    if host not in ("%", ""):
        raise InvalidRequestError("PostgreSQL users have no host: leave it out or give '%'")


class PostgresAccounts:
    """:class:`strongroom.engines.base.AccountManager` for managed PostgreSQL servers."""

    # -- users ------------------------------------------------------------------------
    def list_users(self, connection: Connection) -> list[AccountInfo]:
        with _session(connection) as conn:
            return _users(conn)

    def create_users(self, connection: Connection, users: Sequence[UserSpec]) -> None:
        for user in users:
            check_user(user.name, user.host)
            for db in user.databases:
                names.check_database(db)
        with _session(connection) as conn:
            existing = set(_databases(conn))
        missing = sorted({db for u in users for db in u.databases} - existing)
        if missing:
            raise AccountNotFoundError("Database", missing[0])
        request = InstanceRequest(name="", users=tuple(users))
        _run(lambda: accounts.apply_request(connection, request))
        with _session(connection) as conn:
            for user in users:
                for db in user.databases:
                    _close_to_public(conn, db)
            _refresh(conn, connection)

    def delete_user(self, connection: Connection, name: str, host: str) -> None:
        check_user(name, host)
        with _session(connection) as conn:
            _require_user(conn, name)
            # Its objects are neither dropped (the tenant's data) nor given to the
            # superuser (a SECURITY DEFINER function would then run as superuser).
            owns = conn.execute(
                "SELECT DISTINCT d.datname FROM pg_shdepend s "
                "JOIN pg_roles r ON r.oid = s.refobjid AND s.refclassid = 'pg_authid'::regclass "
                "LEFT JOIN pg_database d ON d.oid = s.dbid "
                "WHERE r.rolname = %s AND s.deptype = 'o' ORDER BY 1",
                (name,),
            ).fetchall()
            if owns:
                where = ", ".join(str(row[0] or "the cluster") for row in owns)
                raise InvalidRequestError(
                    f"user {name!r} owns tables or other objects in {where}: drop them, or "
                    "give them to another user (ALTER … OWNER TO), before deleting it"
                )
            for db in _databases(conn, every=True):
                with _session(connection, dbname=db) as dbconn:
                    # Nothing owned: this drops its privileges only.
                    dbconn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
            _refresh(conn, connection)

    def change_passwords(self, connection: Connection, users: Sequence[UserSpec]) -> None:
        for user in users:
            check_user(user.name, user.host)
        with _session(connection) as conn:
            for user in users:
                _require_user(conn, user.name)
            for user in users:
                _set_password(conn, user.name, user.password, "")

    def update_user(
        self, connection: Connection, name: str, host: str, changes: UserChanges
    ) -> None:
        check_user(name, host)
        target = changes.name or name
        check_user(target, changes.host or "%")
        with _session(connection) as conn:
            _require_user(conn, name)
            if target != name:
                taken = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (target,))
                if taken.fetchone():
                    raise InvalidRequestError(f"user {target!r} already exists")
                # The SCRAM verifier does not depend on the name: the password is kept.
                conn.execute(
                    sql.SQL("ALTER ROLE {} RENAME TO {}").format(
                        sql.Identifier(name), sql.Identifier(target)
                    )
                )
            if changes.password:
                _set_password(conn, target, changes.password, "")
            _refresh(conn, connection)

    def grant(self, connection: Connection, name: str, host: str, databases: Sequence[str]) -> None:
        check_user(name, host)
        for db in databases:
            names.check_database(db)
        with _session(connection) as conn:
            _require_user(conn, name)
            existing = set(_databases(conn))
            for db in databases:
                if db not in existing:
                    raise AccountNotFoundError("Database", db)
            for db in databases:
                _close_to_public(conn, db)
                conn.execute(
                    sql.SQL("GRANT ALL PRIVILEGES ON DATABASE {} TO {}").format(
                        sql.Identifier(db), sql.Identifier(name)
                    )
                )
                with _session(connection, dbname=db) as dbconn:
                    for stmt in SCHEMA_GRANTS:
                        dbconn.execute(sql.SQL(stmt).format(sql.Identifier(name)))
            _refresh(conn, connection)

    def revoke(self, connection: Connection, name: str, host: str, database: str) -> None:
        check_user(name, host)
        names.check_database(database)
        with _session(connection) as conn:
            granted = {u.name: u.databases for u in _users(conn)}
            if name not in granted:
                raise AccountNotFoundError("User", name)
            if database not in granted[name]:
                raise AccountNotFoundError("Database", database)
            conn.execute(
                sql.SQL("REVOKE ALL PRIVILEGES ON DATABASE {} FROM {}").format(
                    sql.Identifier(database), sql.Identifier(name)
                )
            )
            with _session(connection, dbname=database) as dbconn:
                for stmt in SCHEMA_REVOKES:
                    dbconn.execute(sql.SQL(stmt).format(sql.Identifier(name)))
            _refresh(conn, connection)

    # -- databases --------------------------------------------------------------------
    def list_databases(self, connection: Connection) -> list[str]:
        with _session(connection) as conn:
            return _databases(conn)

    def create_databases(self, connection: Connection, databases: Sequence[DatabaseSpec]) -> None:
        for db in databases:
            names.check_database(db.name)
        with _session(connection) as conn:
            existing = set(_databases(conn, every=True))
            for db in databases:
                if db.name in existing:
                    continue
                statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db.name))
                if db.character_set or db.collate:
                    # Another encoding or collation than the template's needs template0.
                    statement += sql.SQL(" TEMPLATE template0")
                if db.character_set:
                    statement += sql.SQL(" ENCODING {}").format(sql.Literal(db.character_set))
                if db.collate:
                    statement += sql.SQL(" LC_COLLATE {}").format(sql.Literal(db.collate))
                try:
                    conn.execute(statement)
                except (
                    psycopg.errors.InvalidParameterValue,
                    psycopg.errors.UndefinedObject,
                ) as exc:
                    raise InvalidRequestError(session.pg_error(exc)) from None
                _close_to_public(conn, db.name)
            _refresh(conn, connection)

    def delete_database(self, connection: Connection, name: str) -> None:
        names.check_database(name)
        with _session(connection) as conn:
            if name not in _databases(conn):
                raise AccountNotFoundError("Database", name)
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            _refresh(conn, connection)

    # -- root -------------------------------------------------------------------------
    def enable_root(self, connection: Connection, password: str | None = None) -> tuple[str, str]:
        password = password or secrets.token_urlsafe(24)
        with _session(connection) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (ROOT_USER,)
            ).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(ROOT_USER)))
            _set_password(conn, ROOT_USER, password, "SUPERUSER LOGIN ")
        return ROOT_USER, password

    def disable_root(self, connection: Connection) -> None:
        with _session(connection) as conn:
            conn.execute(
                "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'root') THEN "
                "ALTER ROLE root NOSUPERUSER NOLOGIN PASSWORD NULL; END IF; END $$"
            )


@contextmanager
def _session(connection: Connection, *, dbname: str | None = None) -> Iterator[Any]:
    """A superuser session; server errors become ``EngineError`` with no secret."""
    if not connection.get("managed"):
        raise EngineError("users and databases are managed on managed instances only")
    # The socket is in the instance's home, which its OS user (the tenant, once root)
    # can replace with a server of its own: SCRAM only, so the password is never sent.
    extra: dict[str, Any] = {"require_auth": "scram-sha-256"}
    if dbname:
        extra["dbname"] = dbname
    try:
        with session.connect(connection, **extra) as conn:
            yield conn
    except psycopg.Error as exc:
        reason = session.scrub(session.pg_error(exc), connection.get("password"))
        raise EngineError(f"the server refused: {reason}") from exc


def _run(call: Any) -> None:
    try:
        call()
    except psycopg.Error as exc:
        raise EngineError(f"the server refused: {session.pg_error(exc)}") from exc


def _users(conn: Any) -> list[AccountInfo]:
    found = []
    for (name,) in conn.execute(_TENANT_ROLES, (ROOT_USER,)).fetchall():
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datallowconn "
            "AND datname NOT IN ('postgres', 'template0', 'template1') "
            "AND has_database_privilege(%s, oid, 'CREATE') ORDER BY datname",
            (name,),
        ).fetchall()
        found.append(AccountInfo(name=name, host="%", databases=tuple(r[0] for r in rows)))
    return found


def _databases(conn: Any, *, every: bool = False) -> list[str]:
    query = "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname"
    return [r[0] for r in conn.execute(query if every else _TENANT_DATABASES).fetchall()]


def _require_user(conn: Any, name: str) -> None:
    if name not in {u.name for u in _users(conn)}:
        raise AccountNotFoundError("User", name)


def _set_password(conn: Any, name: str, password: str, options: str) -> None:
    """A SCRAM verifier computed here, so the password itself never reaches the server's
    statement log."""
    verifier = conn.pgconn.encrypt_password(
        password.encode(), name.encode(), b"scram-sha-256"
    ).decode()
    conn.execute(
        sql.SQL("ALTER ROLE {} " + options + "PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(verifier)
        )
    )


def _close_to_public(conn: Any, database: str) -> None:
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))


def _refresh(conn: Any, connection: Connection) -> None:
    connection["users"] = [u.name for u in _users(conn)]
    connection["databases"] = _databases(conn)
