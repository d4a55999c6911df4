"""The databases and users a create-instance request asks for, made on a managed server.

A requested user is a new login role that can do nothing beyond its databases
(:data:`CREATED_ROLE_OPTIONS`); a role that already exists is never altered (it may be a
restored server's superuser). :mod:`names` refuses reserved names before this runs.
"""

from __future__ import annotations

from psycopg import sql

from strongroom.engines.base import Connection, InstanceRequest
from strongroom.engines.errors import InvalidRequestError
from strongroom.engines.postgresql import session

# What a requested user may not do, whatever defaults a server was built with.
CREATED_ROLE_OPTIONS = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


def apply_request(connection: Connection, request: InstanceRequest) -> None:
    """Create the requested databases and users (with their grants)."""
    wanted_dbs = [d.name for d in request.databases]
    for user in request.users:
        wanted_dbs.extend(db for db in user.databases if db not in wanted_dbs)
    users: list[str] = list(connection.get("users", []))
    databases: list[str] = list(connection.get("databases", []))
    with session.connect(connection) as conn:
        existing = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        for name in wanted_dbs:
            if name not in existing:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            if name not in databases:
                databases.append(name)
        for user in request.users:
            verifier = conn.pgconn.encrypt_password(
                user.password.encode(), user.name.encode(), b"scram-sha-256"
            ).decode()
            exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (user.name,)
            ).fetchone()
            if exists:
                # Altering it would hand the requester a role someone else made
                # (a restored server's own, its superuser among them).
                raise InvalidRequestError(f"user {user.name!r} already exists")
            conn.execute(
                sql.SQL("CREATE ROLE {} " + CREATED_ROLE_OPTIONS + " PASSWORD {}").format(
                    sql.Identifier(user.name), sql.Literal(verifier)
                )
            )
            for db in user.databases:
                conn.execute(
                    sql.SQL("GRANT ALL PRIVILEGES ON DATABASE {} TO {}").format(
                        sql.Identifier(db), sql.Identifier(user.name)
                    )
                )
                # Like Trove's "ALL on the database": the schema and what is in it.
                with session.connect(connection, dbname=db) as dbconn:
                    for stmt in (
                        "GRANT ALL ON SCHEMA public TO {}",
                        "GRANT ALL ON ALL TABLES IN SCHEMA public TO {}",
                        "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {}",
                    ):
                        dbconn.execute(sql.SQL(stmt).format(sql.Identifier(user.name)))
            if user.name not in users:
                users.append(user.name)
    connection["users"] = users
    connection["databases"] = databases
