"""Trove's user, database and root calls on a managed PostgreSQL instance, through the API,
then logins with psql over TCP: a user reaches its database and not another; root is a
superuser; another project gets 404; reserved names 400; a SQLite instance 501."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import pytest

from fixtures.service import Caller, Harness, make_harness
from strongroom.engines.postgresql import cluster
from support.postgresql_service import PG_MAJOR, reachable_dir, wait_status

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]

PASSWORD = "pw-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def h() -> Iterator[Harness]:
    with reachable_dir("strongroom-pgusers-") as base:
        root = base / "service"
        root.mkdir(mode=0o711)
        harness = make_harness(
            root,
            datastores=["sqlite", "postgresql"],
            postgresql_allowed_hosts=["127.0.0.1"],
            engine_timeout=120,
        )
        try:
            yield harness
        finally:
            harness.container.close()


@pytest.fixture(scope="module")
def pg(h: Harness) -> dict[str, Any]:
    created = h.a.create_instance("pg", datastore={"type": "postgresql"})
    view: dict[str, Any] = wait_status(
        lambda: h.a.get(f"/instances/{created['id']}").json()["instance"], "ACTIVE"
    )
    return view


def put(caller: Caller, path: str, body: Any) -> Any:
    return caller.client.put(caller.url(path), json=body, headers=caller._headers(None))


def psql(view: dict[str, Any], user: str, password: str, db: str, query: str) -> Any:
    """``query`` run by psql over TCP as ``user``."""
    return subprocess.run(
        [
            "psql",
            "-X",
            "-qAt",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            view["ip"][0],
            "-p",
            str(view["connection"]["port"]),
            "-U",
            user,
            "-d",
            db,
            "-c",
            query,
        ],
        env={"PATH": os.environ["PATH"], "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_user_and_database_calls_then_login_reaches_only_its_database(
    h: Harness, pg: dict[str, Any]
) -> None:
    base = f"/instances/{pg['id']}"
    assert (
        h.a.post(
            f"{base}/databases", {"databases": [{"name": "shop"}, {"name": "other"}]}
        ).status_code
        == 202
    )
    r = h.a.post(
        f"{base}/users",
        {"users": [{"name": "clerk", "password": PASSWORD, "databases": [{"name": "shop"}]}]},
    )
    assert r.status_code == 202, r.text
    assert h.a.get(f"{base}/databases").json() == {
        "databases": [{"name": "other"}, {"name": "shop"}]
    }
    assert h.a.get(f"{base}/users").json() == {
        "users": [{"name": "clerk", "host": "%", "databases": [{"name": "shop"}]}]
    }
    assert h.a.get(f"{base}/users/clerk").json()["user"]["name"] == "clerk"
    assert h.a.get(f"{base}/users/clerk/databases").json() == {"databases": [{"name": "shop"}]}
    # The view says where to connect and what is there.
    view = h.a.get(base).json()["instance"]
    assert view["ip"] == ["127.0.0.1"]
    assert view["connection"]["users"] == ["clerk"]
    assert view["connection"]["databases"] == ["other", "shop"]

    ok = psql(
        view,
        "clerk",
        PASSWORD,
        "shop",
        "CREATE TABLE t (n int); INSERT INTO t VALUES (7); SELECT n FROM t",
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "7"
    denied = psql(view, "clerk", PASSWORD, "other", "SELECT 1")
    assert denied.returncode != 0 and "permission denied" in denied.stderr
    not_super = psql(view, "clerk", PASSWORD, "shop", "COPY t TO PROGRAM 'true'")
    assert not_super.returncode != 0
    wrong = psql(view, "clerk", "not-" + PASSWORD, "shop", "SELECT 1")
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr

    # grant, revoke, password change
    assert (
        put(h.a, f"{base}/users/clerk/databases", {"databases": [{"name": "other"}]}).status_code
        == 202
    )
    assert psql(view, "clerk", PASSWORD, "other", "SELECT 1").returncode == 0
    assert h.a.delete(f"{base}/users/clerk/databases/other").status_code == 202
    assert psql(view, "clerk", PASSWORD, "other", "SELECT 1").returncode != 0
    new_password = "new-" + PASSWORD
    r = put(h.a, f"{base}/users", {"users": [{"name": "clerk", "password": new_password}]})
    assert r.status_code == 202, r.text
    assert psql(view, "clerk", new_password, "shop", "SELECT n FROM t").stdout.strip() == "7"
    assert psql(view, "clerk", PASSWORD, "shop", "SELECT 1").returncode != 0

    # A user that owns a table is kept (its data would be lost, or handed to the
    # superuser); once the table is gone it can be deleted.
    owns = h.a.delete(f"{base}/users/clerk")
    assert owns.status_code == 400
    assert "owns tables or other objects in shop" in owns.json()["badRequest"]["message"]
    assert psql(view, "clerk", new_password, "shop", "DROP TABLE t").returncode == 0
    assert h.a.delete(f"{base}/users/clerk").status_code == 202
    assert h.a.get(f"{base}/users").json() == {"users": []}
    assert h.a.get(f"{base}/users/clerk").status_code == 404
    assert h.a.delete(f"{base}/databases/other").status_code == 202
    assert h.a.delete(f"{base}/databases/other").status_code == 404
    view = h.a.get(base).json()["instance"]
    assert view["connection"]["users"] == [] and view["connection"]["databases"] == ["shop"]


def test_root_enable_gives_a_superuser_once_and_is_remembered(
    h: Harness, pg: dict[str, Any]
) -> None:
    base = f"/instances/{pg['id']}"
    assert h.a.get(f"{base}/root").json() == {"rootEnabled": False}
    never = h.a.delete(f"{base}/root")
    assert never.status_code == 404
    assert never.json()["itemNotFound"]["message"] == "User root cannot be found on the instance."
    r = h.a.post(f"{base}/root")
    assert r.status_code == 200, r.text
    user = r.json()["user"]
    assert user["name"] == "root" and len(user["password"]) >= 20
    out = psql(
        pg,
        "root",
        user["password"],
        "postgres",
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "t"
    assert h.a.get(f"{base}/root").json() == {"rootEnabled": True}
    # enabling again resets the password
    second = h.a.post(f"{base}/root").json()["user"]["password"]
    assert second != user["password"]
    assert psql(pg, "root", user["password"], "postgres", "SELECT 1").returncode != 0
    assert h.a.delete(f"{base}/root").status_code == 200
    assert psql(pg, "root", second, "postgres", "SELECT 1").returncode != 0
    assert h.a.get(f"{base}/root").json() == {"rootEnabled": True}
    # a password of the caller's choosing (troveclient's --root-password)
    chosen = "chosen-" + PASSWORD
    r = h.a.post(f"{base}/root", {"password": chosen})
    assert r.json()["user"] == {"name": "root", "password": chosen}
    assert psql(pg, "root", chosen, "postgres", "SELECT 1").returncode == 0
    # root is not a user the users calls can touch
    assert h.a.get(f"{base}/users").json() == {"users": []}
    assert h.a.delete(f"{base}/users/root").status_code == 400


@pytest.mark.parametrize(
    "name",
    ["postgres", "pg_read_server_files", "root", "strongroom_backup", "PUBLIC"],
)
def test_reserved_user_names_are_refused(h: Harness, pg: dict[str, Any], name: str) -> None:
    base = f"/instances/{pg['id']}"
    r = h.a.post(f"{base}/users", {"users": [{"name": name, "password": PASSWORD}]})
    assert r.status_code == 400, r.text
    assert "reserved" in r.json()["badRequest"]["message"]
    r = put(h.a, f"{base}/users", {"users": [{"name": name, "password": PASSWORD}]})
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("name", ["postgres", "template0", "template1"])
def test_reserved_databases_are_refused(h: Harness, pg: dict[str, Any], name: str) -> None:
    base = f"/instances/{pg['id']}"
    assert h.a.post(f"{base}/databases", {"databases": [{"name": name}]}).status_code == 400
    assert h.a.delete(f"{base}/databases/{name}").status_code == 400


def test_another_project_gets_404_on_every_path(h: Harness, pg: dict[str, Any]) -> None:
    base = f"/instances/{pg['id']}"
    user = {"users": [{"name": "intruder", "password": PASSWORD}]}
    calls = [
        h.b.get(f"{base}/users"),
        h.b.post(f"{base}/users", user),
        put(h.b, f"{base}/users", user),
        h.b.get(f"{base}/users/intruder"),
        h.b.delete(f"{base}/users/intruder"),
        h.b.get(f"{base}/users/intruder/databases"),
        put(h.b, f"{base}/users/intruder/databases", {"databases": [{"name": "shop"}]}),
        h.b.delete(f"{base}/users/intruder/databases/shop"),
        h.b.get(f"{base}/databases"),
        h.b.post(f"{base}/databases", {"databases": [{"name": "x"}]}),
        h.b.delete(f"{base}/databases/shop"),
        h.b.post(f"{base}/root"),
        h.b.get(f"{base}/root"),
        h.b.delete(f"{base}/root"),
    ]
    assert [c.status_code for c in calls] == [404] * len(calls)
    assert "intruder" not in str(h.a.get(f"{base}/users").json())


def test_sqlite_instance_answers_not_implemented(h: Harness) -> None:
    lite = h.a.create_instance("lite")
    base = f"/instances/{lite['id']}"
    for r in (
        h.a.get(f"{base}/users"),
        h.a.post(f"{base}/users", {"users": [{"name": "u", "password": PASSWORD}]}),
        h.a.get(f"{base}/databases"),
        h.a.post(f"{base}/root"),
    ):
        assert r.status_code == 501, r.text
        fault = r.json()["notImplemented"]
        assert fault["code"] == 501
        assert "operation is not supported for the 'sqlite' datastore" in fault["message"]


def test_user_name_in_the_url_is_quoted_as_troveclient_does(h: Harness, pg: dict[str, Any]) -> None:
    base = f"/instances/{pg['id']}"
    name = "a.b"
    r = h.a.post(f"{base}/users", {"users": [{"name": name, "password": PASSWORD}]})
    assert r.status_code == 202, r.text
    quoted = quote(name).replace(".", "%2e")
    assert h.a.get(f"{base}/users/{quoted}").json()["user"]["name"] == name
    assert h.a.delete(f"{base}/users/{quoted}").status_code == 202


def test_unknown_paths_stay_404(h: Harness, pg: dict[str, Any]) -> None:
    assert h.a.get(f"/instances/{pg['id']}/users/x/y/z").status_code == 404


def test_root_runs_programs_as_the_instance_own_os_user(h: Harness, pg: dict[str, Any]) -> None:
    """COPY … PROGRAM is root's reach beyond SQL: it runs as the instance's OS user, which
    can read neither the service's metadata nor another instance's home."""
    password = h.a.post(f"/instances/{pg['id']}/root").json()["user"]["password"]
    whoami = psql(
        pg,
        "root",
        password,
        "postgres",
        "CREATE TEMP TABLE o (l text); COPY o FROM PROGRAM 'id -un'; SELECT l FROM o",
    )
    assert whoami.returncode == 0, whoami.stderr
    assert whoami.stdout.strip().startswith("sr-")
    metadata = h.settings.data_dir / "strongroom.db"
    assert metadata.exists()
    steal = psql(
        pg,
        "root",
        password,
        "postgres",
        "CREATE TEMP TABLE s (l text); "
        f"COPY s FROM PROGRAM 'cat {metadata}'; SELECT count(*) FROM s",
    )
    assert steal.returncode != 0
    other = h.a.create_instance("pg-other", datastore={"type": "postgresql"})
    wait_status(lambda: h.a.get(f"/instances/{other['id']}").json()["instance"], "ACTIVE")
    other_home = h.settings.data_dir / "instances" / other["id"]
    peek = psql(
        pg,
        "root",
        password,
        "postgres",
        "CREATE TEMP TABLE p (l text); "
        f"COPY p FROM PROGRAM 'ls {other_home}/data'; SELECT count(*) FROM p",
    )
    assert peek.returncode != 0
    assert h.a.delete(f"/instances/{other['id']}").status_code == 202
    h.a.delete(f"/instances/{pg['id']}/root")


@pytest.mark.parametrize("name", ['o"brien', "x'; DROP ROLE postgres; --", "space name"])
def test_names_are_identifiers_never_sql(h: Harness, pg: dict[str, Any], name: str) -> None:
    base = f"/instances/{pg['id']}"
    r = h.a.post(f"{base}/databases", {"databases": [{"name": name}]})
    assert r.status_code == 202, r.text
    r = h.a.post(
        f"{base}/users",
        {"users": [{"name": name, "password": PASSWORD, "databases": [{"name": name}]}]},
    )
    assert r.status_code == 202, r.text
    view = h.a.get(base).json()["instance"]
    out = psql(view, name, PASSWORD, name, "SELECT current_user, current_database()")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{name}|{name}"
    quoted = quote(name).replace(".", "%2e")
    assert h.a.delete(f"{base}/users/{quoted}").status_code == 202
    assert h.a.delete(f"{base}/databases/{quote(name)}").status_code == 202
    assert name not in str(h.a.get(base).json()["instance"]["connection"])


def test_concurrent_changes_are_all_recorded(h: Harness, pg: dict[str, Any]) -> None:
    base = f"/instances/{pg['id']}"
    names = [f"c{i}" for i in range(6)]

    def create(name: str) -> int:
        body = {"users": [{"name": name, "password": PASSWORD}]}
        return int(h.a.post(f"{base}/users", body).status_code)

    # One event loop serves all six, as in a real server (outside its context, the test
    # client runs each request on an event loop of its own).
    with h.client, ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(create, names)) == [202] * len(names)
    recorded = h.a.get(base).json()["instance"]["connection"]["users"]
    assert set(names) <= set(recorded)
    for name in names:
        assert h.a.delete(f"{base}/users/{name}").status_code == 202
    assert not set(names) & set(h.a.get(base).json()["instance"]["connection"]["users"])


def test_external_instance_answers_not_implemented(h: Harness, pg: dict[str, Any]) -> None:
    """The managed server registered again as an external one (with root's login)."""
    base = f"/instances/{pg['id']}"
    password = h.a.post(f"{base}/root").json()["user"]["password"]
    try:
        r = h.a.post(
            "/instances",
            {
                "instance": {
                    "name": "ext",
                    "datastore": {"type": "postgresql"},
                    "external": {
                        "host": "127.0.0.1",
                        "port": pg["connection"]["port"],
                        "user": "root",
                        "password": password,
                    },
                }
            },
        )
        assert r.status_code == 200, r.text
        ext = r.json()["instance"]["id"]
        for call in (
            h.a.get(f"/instances/{ext}/users"),
            h.a.post(f"/instances/{ext}/databases", {"databases": [{"name": "x"}]}),
            h.a.post(f"/instances/{ext}/root"),
        ):
            assert call.status_code == 501, call.text
            assert "external postgresql" in call.json()["notImplemented"]["message"]
        assert h.a.delete(f"/instances/{ext}").status_code == 202
    finally:
        h.a.delete(f"{base}/root")


def test_user_list_pages(h: Harness, pg: dict[str, Any]) -> None:
    base = f"/instances/{pg['id']}"
    names = [f"p{i:02d}" for i in range(3)]
    h.a.post(f"{base}/users", {"users": [{"name": n, "password": PASSWORD} for n in names]})
    first = h.a.get(f"{base}/users?limit=2").json()
    assert [u["name"] for u in first["users"]] == names[:2]
    (link,) = first["links"]
    assert link["rel"] == "next" and "marker=2" in link["href"]
    rest = h.a.get(f"{base}/users?limit=2&marker=2").json()
    assert [u["name"] for u in rest["users"]] == names[2:] and "links" not in rest
    assert h.a.get(f"{base}/users?limit=0").status_code == 400
    for n in names:
        h.a.delete(f"{base}/users/{n}")


def test_deleting_a_user_never_gives_its_functions_to_the_superuser(
    h: Harness, pg: dict[str, Any]
) -> None:
    """A SECURITY DEFINER function of a deleted user, were it handed to the superuser,
    would let any other user run SQL as superuser."""
    base = f"/instances/{pg['id']}"
    h.a.post(f"{base}/databases", {"databases": [{"name": "fx"}]})
    users = [{"name": n, "password": PASSWORD, "databases": [{"name": "fx"}]} for n in ("m1", "m2")]
    assert h.a.post(f"{base}/users", {"users": users}).status_code == 202
    view = h.a.get(base).json()["instance"]
    made = psql(
        view, "m1", PASSWORD, "fx",
        "CREATE FUNCTION lift() RETURNS void SECURITY DEFINER LANGUAGE sql "
        "AS 'ALTER ROLE m2 SUPERUSER'; GRANT EXECUTE ON FUNCTION lift() TO m2",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert h.a.delete(f"{base}/users/m1").status_code == 400
    lifted = psql(view, "m2", PASSWORD, "fx", "SELECT lift()")
    assert lifted.returncode != 0  # m1 may not ALTER ROLE … SUPERUSER, and still owns it
    check = psql(view, "m2", PASSWORD, "fx", "SELECT rolsuper FROM pg_roles WHERE rolname = 'm2'")
    assert check.stdout.strip() == "f"
    assert psql(view, "m1", PASSWORD, "fx", "DROP FUNCTION lift()").returncode == 0
    for name in ("m1", "m2"):
        assert h.a.delete(f"{base}/users/{name}").status_code == 202
    assert h.a.delete(f"{base}/databases/fx").status_code == 202


def test_database_with_encoding_and_collation(h: Harness, pg: dict[str, Any]) -> None:
    base = f"/instances/{pg['id']}"
    body = {"databases": [{"name": "latin", "character_set": "LATIN1", "collate": "C"}]}
    assert h.a.post(f"{base}/databases", body).status_code == 202
    password = h.a.post(f"{base}/root").json()["user"]["password"]
    out = psql(pg, "root", password, "postgres",
               "SELECT pg_encoding_to_char(encoding), datcollate FROM pg_database "
               "WHERE datname = 'latin'")  # fmt: skip
    assert out.stdout.strip() == "LATIN1|C", out.stderr
    h.a.delete(f"{base}/root")
    bad = {"databases": [{"name": "bad", "character_set": "NO_SUCH_ENCODING"}]}
    r = h.a.post(f"{base}/databases", bad)
    assert r.status_code == 400, r.text
    r = h.a.post(f"{base}/databases", {"databases": [{"name": "bad", "collate": "x'; --"}]})
    assert r.status_code == 400, r.text
    assert "bad" not in [d["name"] for d in h.a.get(f"{base}/databases").json()["databases"]]
    assert h.a.delete(f"{base}/databases/latin").status_code == 202


def test_a_server_swapped_into_the_socket_never_gets_the_password(
    h: Harness, pg: dict[str, Any]
) -> None:
    """The instance's OS user can replace the socket in its home with a server of its own
    that asks for the password in clear text: the service refuses to send it (and, as
    root, to talk at all to a server that does not run as the instance's OS user)."""
    home = h.settings.data_dir / "instances" / pg["id"]
    real = cluster.socket_dir_for(home) / f".s.PGSQL.{pg['connection']['port']}"
    aside = real.with_name(real.name + ".real")
    received = bytearray()
    os.rename(real, aside)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as fake:
            fake.bind(str(real))
            fake.listen(8)
            fake.settimeout(30)

            def serve() -> None:
                # The connection: read the startup packet, ask for a clear-text password
                # (AuthenticationCleartextPassword), keep whatever comes back.
                with contextlib.suppress(OSError):
                    peer, _addr = fake.accept()
                    with peer:
                        peer.settimeout(5)
                        received.extend(peer.recv(65536))
                        peer.sendall(b"R" + struct.pack("!ii", 8, 3))
                        while chunk := peer.recv(65536):
                            received.extend(chunk)

            server = threading.Thread(target=serve, daemon=True)
            server.start()
            r = h.a.get(f"/instances/{pg['id']}/users")
            assert r.status_code == 422, r.text
            server.join(timeout=30)
            assert not server.is_alive()
        if os.geteuid() == 0:
            # The fake server is root's, not the instance's OS user's: nothing is sent.
            assert received == b"", "the service talked to a server of another OS user"
        else:
            assert received, "the service never reached the swapped socket"
        password = _service_password(h, pg["id"])
        assert password and password.encode() not in bytes(received)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(real)
        os.rename(aside, real)
    assert h.a.get(f"/instances/{pg['id']}/users").status_code == 200


def _service_password(h: Harness, instance_id: str) -> str:
    container = h.container
    with container.uow() as uow:
        sealed = uow.instances.sealed_connection(instance_id)
    assert sealed is not None
    opened = container.handlers._secrets.open(sealed, bound_to=instance_id)
    return str(opened["password"])
