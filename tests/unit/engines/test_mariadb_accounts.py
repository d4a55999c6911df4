"""Which users, hosts and databases a managed MariaDB server accepts (no server)."""

from __future__ import annotations

import pytest

from strongroom.engines.base import DatabaseSpec, InstanceRequest, UserSpec
from strongroom.engines.errors import InvalidRequestError
from strongroom.engines.mariadb import MariaDbEngine, accounts


def test_service_accounts_sql_is_not_binlogged() -> None:
    sql = accounts.service_accounts_sql("adminpw", "backuppw")
    lines = sql.splitlines()
    assert lines[0] == "SET SESSION sql_log_bin = 0;"
    assert "CREATE OR REPLACE USER 'strongroom_admin'@'localhost' IDENTIFIED BY 'adminpw';" in sql
    assert "GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.*" in sql


def user_request(name: str, host: str = "%", *databases: str) -> InstanceRequest:
    return InstanceRequest("x", users=(UserSpec(name, "pw", tuple(databases), host),))


@pytest.mark.parametrize(
    "name",
    [
        "root",
        "ROOT",
        "mysql",
        "mariadb.sys",
        "mysql.session",
        "mysql.infoschema",
        "PUBLIC",
        accounts.ADMIN_USER,
        accounts.BACKUP_USER,
        "Strongroom_backup",
        "strongroom_other",
        "sr-0123456789ab",
        "",
        " bob",
        "x" * 81,
        "bob\n",
        "bob\x00",
        "bob\x7f",
    ],
)
def test_reserved_and_malformed_user_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequestError):
        MariaDbEngine().check_request(user_request(name))


@pytest.mark.parametrize(
    "host", ["%", "%.example.com", "192.168.0.%", "db-1.example.com", "localhost", "10.0.0.1"]
)
def test_trove_user_hosts_are_accepted(host: str) -> None:
    MariaDbEngine().check_request(user_request("bob", host, "app"))
    MariaDbEngine().check_request(user_request("b" * 80, host))


@pytest.mark.parametrize("host", ["", "a b", "%%.x", "x'%", "h/24", "\n", "%" + "a" * 255])
def test_malformed_user_hosts_are_refused(host: str) -> None:
    with pytest.raises(InvalidRequestError, match="host"):
        MariaDbEngine().check_request(user_request("bob", host))


@pytest.mark.parametrize(
    "database",
    [
        "mysql",
        "MySQL",
        "information_schema",
        "performance_schema",
        "sys",
        "%",
        "a%",
        "a.b",
        "../etc",
        "",
        "x" * 65,
    ],
)
def test_reserved_and_malformed_databases_are_refused(database: str) -> None:
    with pytest.raises(InvalidRequestError):
        MariaDbEngine().check_request(InstanceRequest("x", databases=(DatabaseSpec(database),)))
    with pytest.raises(InvalidRequestError):
        MariaDbEngine().check_request(user_request("bob", "%", database))


def test_the_same_account_twice_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="twice"):
        MariaDbEngine().check_request(
            InstanceRequest("x", users=(UserSpec("bob", "a"), UserSpec("bob", "b")))
        )
    MariaDbEngine().check_request(
        InstanceRequest("x", users=(UserSpec("bob", "a"), UserSpec("bob", "b", host="localhost")))
    )


def test_grants_name_one_database_not_a_pattern() -> None:
    # In GRANT, "_" matches any character: `mysq_`.* would cover `mysql`.
    assert accounts.grant_pattern("mysq_") == "`mysq\\_`"
    assert accounts.grant_pattern("my_app") == "`my\\_app`"
    assert accounts._unescape("my\\_app") == "my_app"
