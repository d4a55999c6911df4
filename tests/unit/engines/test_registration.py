"""Registering an external server: each engine's parameters are checked by its model, and
what is wrong is said by field, without the values (a registration holds a password)."""

from __future__ import annotations

from typing import Any

import pytest

from strongroom.engines.errors import InvalidExternalError
from strongroom.engines.mariadb.models import ExternalRegistration as MariaDBRegistration
from strongroom.engines.postgresql.models import ExternalRegistration as PostgresRegistration
from strongroom.engines.registration import parse_registration

SECRET = "pw-Zq81\x01"
PG = {"host": " db.example ", "user": "backup", "password": "s3cret"}
MARIA = {"host": "DB.Example", "user": "backup", "password": "s3cret", "datadir": "/srv/m"}


def test_postgresql_defaults_and_a_port_given_as_text() -> None:
    given = parse_registration(PostgresRegistration, {**PG, "port": "6543", "database": None})
    assert (given.host, given.port, given.user) == ("db.example", 6543, "backup")
    assert given.database == "postgres" and given.data_dir is None
    bare = parse_registration(PostgresRegistration, {"host": "h", "user": "u"})
    assert (bare.port, bare.password) == (5432, "")


def test_mariadb_defaults_lower_case_host_and_requires_a_data_directory() -> None:
    given = parse_registration(MariaDBRegistration, MARIA)
    assert (given.host, given.port, given.datadir) == ("db.example", 3306, "/srv/m")
    with pytest.raises(InvalidExternalError, match=r"^datadir is required$"):
        parse_registration(MariaDBRegistration, {k: v for k, v in MARIA.items() if k != "datadir"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"host": "  "}, "host is required"),
        ({"user": None}, "user must be a string"),
        ({"port": True}, "port must be a number"),
        ({"port": "http"}, "port must be a number"),
        ({"port": 0}, "port must be between 1 and 65535"),
        ({"port": 70000}, "port must be between 1 and 65535"),
        ({"data_dir": "relative/dir"}, "data_dir must be an absolute path"),
        ({"password": 12345}, "password must be a string"),
    ],
)
def test_postgresql_refusals_name_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidExternalError) as caught:
        parse_registration(PostgresRegistration, {**PG, **change})
    assert str(caught.value) == message


def test_missing_fields_are_required() -> None:
    with pytest.raises(InvalidExternalError, match=r"^host is required$"):
        parse_registration(PostgresRegistration, {"user": "u"})
    with pytest.raises(InvalidExternalError, match=r"^user is required$"):
        parse_registration(MariaDBRegistration, {"host": "h", "datadir": "/d"})


def test_control_characters_in_a_mariadb_password_are_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidExternalError) as caught:
        parse_registration(MariaDBRegistration, {**MARIA, "password": SECRET})
    assert str(caught.value) == "password must not contain control characters"
    assert SECRET not in repr(caught.value.__cause__) and caught.value.__cause__ is None
    with pytest.raises(InvalidExternalError, match=r"^datadir must be an absolute path"):
        parse_registration(MariaDBRegistration, {**MARIA, "datadir": "var/lib/mysql"})
