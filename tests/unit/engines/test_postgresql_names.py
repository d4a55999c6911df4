"""Names a PostgreSQL create-instance request may not use (checked before anything runs)."""

from __future__ import annotations

import pytest

from strongroom.engines.base import DatabaseSpec, InstanceRequest, UserSpec
from strongroom.engines.errors import InvalidRequestError
from strongroom.engines.postgresql import PostgresEngine


def _check(users: tuple[UserSpec, ...] = (), dbs: tuple[str, ...] = ()) -> None:
    request = InstanceRequest("x", tuple(DatabaseSpec(d) for d in dbs), users)
    PostgresEngine().check_request(request)


@pytest.mark.parametrize(
    "name",
    [
        "postgres",
        "Postgres",
        "pg_monitor",
        "pg_read_server_files",
        "pg_execute_server_program",
        "PG_WRITE_SERVER_FILES",
        "strongroom",
        "strongroom_backup",
        "public",
        "",
        "x" * 64,
        "é" * 32,  # 64 bytes
        "bad\nname",
        "tab\tname",
        "nul\x00name",
    ],
)
def test_reserved_or_malformed_user_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequestError, match="user name"):
        _check(users=(UserSpec(name, "pw"),))


@pytest.mark.parametrize(
    "name", ["postgres", "template0", "template1", "TEMPLATE1", "", "d" * 64, "a\x7fb"]
)
def test_reserved_or_malformed_database_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequestError, match="database name"):
        _check(dbs=(name,))
    with pytest.raises(InvalidRequestError, match="database name"):
        _check(users=(UserSpec("app", "pw", (name,)),))


def test_ordinary_names_pass() -> None:
    _check(
        users=(UserSpec("app", "pw", ("bench",)), UserSpec("x" * 63, "pw")),
        dbs=("bench", "d" * 63, "my db", "postgres2"),
    )
