"""Tenant isolation of managed PostgreSQL servers on one host, attacked for real.

A member asks for reserved user names; a tenant that holds its instance's superuser
password (as one who read the sealed connection would) runs programs on the host through
``COPY … FROM PROGRAM`` and reads what the server's environment holds; someone on the host
tries the local socket without a password; and a tenant renames directories of its data
directory into links while a file-level backup reads it. Each test fails if the attack
works.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from fixtures.service import Harness, make_harness, wait_for
from security.wire import assert_fault
from strongroom.engines import identity
from strongroom.engines.base import DatabaseSpec, InstanceRequest, RestoreInput, UserSpec
from strongroom.engines.errors import (
    BackupError,
    InstanceError,
    InvalidRequestError,
    RestoreError,
)
from strongroom.engines.identity import InstanceIdentity, name_for
from strongroom.engines.postgresql import PostgresEngine, cluster, session
from support.postgresql import (
    FileSink,
    OffsetFileSource,
    homes_dir,
    snapshot,
)

_probe = PostgresEngine()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_probe.detect() is None, reason="PostgreSQL server tools not installed"),
]
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="OS users per instance need root")
CANARY_ENV = "STRONGROOM_ISOLATION_CANARY"
WAIT = 120.0
APP_PASSWORD = "app-" + secrets.token_hex(8)


# -- the service, two projects, one managed server each ----------------------------------


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with homes_dir("strongroom-pgiso-") as path:
        yield path


@pytest.fixture(scope="module")
def canary() -> str:
    return "canary-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def h(base: Path, canary: str) -> Iterator[Harness]:
    root = base / "service"
    root.mkdir(mode=0o711)
    with pytest.MonkeyPatch.context() as env:
        # Whatever the service's environment holds must not reach a managed server.
        env.setenv(CANARY_ENV, canary)
        env.setenv("SERVICE_SIDE_SECRET", canary)
        harness = make_harness(root, datastores=["postgresql"], engine_timeout=120)
        try:
            yield harness
        finally:
            harness.container.close()


def _connection(h: Harness, instance_id: str) -> dict[str, Any]:
    """The sealed connection, opened as the service opens it."""
    with h.container.uow() as uow:
        sealed = uow.instances.sealed_connection(instance_id)
    assert sealed is not None
    opened: dict[str, Any] = h.container.handlers._secrets.open(sealed, bound_to=instance_id)
    return opened


def _wait(h: Harness, caller: Any, instance_id: str, wanted: str = "ACTIVE") -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        view: dict[str, Any] = caller.get(f"/instances/{instance_id}").json()["instance"]
        if view["status"] == "ERROR" and wanted != "ERROR":
            raise AssertionError(view.get("fault"))
        return view if view["status"] == wanted else None

    result: dict[str, Any] = wait_for(ready, timeout=WAIT)
    return result


def _create(caller: Any, name: str, **extra: Any) -> Any:
    body = {"instance": {"name": name, "flavorRef": "1", "datastore": {"type": "postgresql"}}}
    body["instance"].update(extra)
    return caller.post("/instances", body)


@pytest.fixture(scope="module")
def tenants(h: Harness) -> dict[str, dict[str, Any]]:
    """Project A's and project B's instances; B's holds a secret row."""
    out: dict[str, dict[str, Any]] = {}
    for key, caller in (("a", h.a), ("b", h.b)):
        r = _create(
            caller,
            f"{key}-db",
            databases=[{"name": "bench"}],
            users=[{"name": "app", "password": APP_PASSWORD, "databases": [{"name": "bench"}]}],
        )
        assert r.status_code == 200, r.text
        instance_id = r.json()["instance"]["id"]
        _wait(h, caller, instance_id)
        out[key] = {"id": instance_id, "conn": _connection(h, instance_id)}
    with _superuser(out["b"]["conn"], "bench") as c:
        c.execute("CREATE TABLE secret (v text)")
        c.execute("INSERT INTO secret VALUES (%s)", ("B-ONLY-" + secrets.token_hex(8),))
        c.execute("CHECKPOINT")
        out["b"]["secret_file"] = Path(out["b"]["conn"]["data_dir"]) / str(
            c.execute("SELECT pg_relation_filepath('secret')").fetchone()[0]  # type: ignore[index]
        )
        out["b"]["secret"] = c.execute("SELECT v FROM secret").fetchone()[0]  # type: ignore[index]
    return out


def _superuser(conn: dict[str, Any], dbname: str = "postgres") -> psycopg.Connection[Any]:
    """The instance's superuser over TCP, with the password from the sealed connection."""
    return psycopg.connect(
        host=conn["host"],
        port=int(conn["port"]),
        user=conn["superuser"],
        password=conn["password"],
        dbname=dbname,
        autocommit=True,
        connect_timeout=10,
    )


def _postmaster_pid(conn: dict[str, Any]) -> int:
    return int((Path(conn["data_dir"]) / "postmaster.pid").read_text().split()[0])


def _os_users() -> set[str]:
    return {e.pw_name for e in pwd.getpwall() if e.pw_name.startswith("sr-")}


# -- requests -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"users": [{"name": "postgres", "password": "x"}]},
        {"users": [{"name": "pg_monitor", "password": "x"}]},
        {"users": [{"name": "pg_execute_server_program", "password": "x"}]},
        {"users": [{"name": "x" * 64, "password": "x"}]},
        {"databases": [{"name": "template1"}]},
        {"users": [{"name": "app", "password": "x", "databases": [{"name": "postgres"}]}]},
    ],
)
def test_reserved_names_are_refused_with_400_and_nothing_is_made(
    h: Harness, tenants: dict[str, Any], extra: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The host's OS users are shared with the other test workers, which add and remove
    # their own meanwhile: record the ones this service (in this process) creates instead.
    made: list[str] = []
    useradd = identity._useradd
    monkeypatch.setattr(identity, "_useradd", lambda name: (made.append(name), useradd(name)))
    before = h.a.get("/instances").json()["instances"]
    homes = sorted(p.name for p in (h.settings.data_dir / "instances").iterdir())
    r = _create(h.a, "grab", **extra)
    body = assert_fault(r, 400)
    assert "reserved" in str(body) or "longer" in str(body)
    h.wait_idle()
    assert h.a.get("/instances").json()["instances"] == before
    assert sorted(p.name for p in (h.settings.data_dir / "instances").iterdir()) == homes
    assert made == []


def test_created_users_have_no_privileges(
    tenants: dict[str, Any],
) -> None:
    conn = tenants["a"]["conn"]
    with _superuser(conn) as c:
        row = c.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = 'app'"
        ).fetchone()
    assert row == (False, False, False, False, False)


def test_an_existing_role_is_never_altered(base: Path) -> None:
    """A restore asked for a user its backup already has: refused, not ALTERed."""
    engine = PostgresEngine(timeout=120)
    home = base / "existing-role"
    conn = engine.create_instance(
        home,
        InstanceRequest("e", (DatabaseSpec("d"),), (UserSpec("owner", "owner-pw", ("d",)),)),
    )
    try:
        sink = FileSink(base / "existing-role.stream")
        try:
            meta = engine.backup(conn, sink, parent=None).metadata
        finally:
            sink.close()
    finally:
        engine.destroy_instance(home, conn)
    target = base / "existing-role-restored"
    source = OffsetFileSource(base / "existing-role.stream")
    try:
        with pytest.raises(RestoreError, match="already exists"):
            engine.restore_instance(
                target,
                [RestoreInput(meta, source)],
                InstanceRequest("r", users=(UserSpec("owner", "taken-over"),)),
            )
    finally:
        source.close()
    assert not target.exists() and name_for(target) not in _os_users()
    with pytest.raises(InvalidRequestError):
        engine.create_instance(base / "dup", InstanceRequest("x", users=(UserSpec("pg_x", "p"),)))
    assert not (base / "dup").exists()


# -- a tenant that is superuser of its server -----------------------------------------------


@AS_ROOT
def test_each_instance_runs_as_its_own_os_user(tenants: dict[str, Any]) -> None:
    a, b = tenants["a"]["conn"], tenants["b"]["conn"]
    assert a["os_user"] != b["os_user"] and {a["os_user"], b["os_user"]} <= _os_users()
    for conn in (a, b):
        uid = pwd.getpwnam(conn["os_user"]).pw_uid
        status = Path(f"/proc/{_postmaster_pid(conn)}/status").read_text()
        (uids,) = [ln for ln in status.splitlines() if ln.startswith("Uid:")]
        assert set(uids.split()[1:]) == {str(uid)}
        home = Path(conn["data_dir"]).parent
        for path in (home, home / "data", home / "log", Path(conn["socket_dir"])):
            st = path.lstat()
            assert (st.st_uid, st.st_mode & 0o777) == (uid, 0o700), path


@AS_ROOT
def test_copy_from_program_runs_as_the_instance_and_reads_nothing_else(
    h: Harness, tenants: dict[str, Any]
) -> None:
    a, b = tenants["a"]["conn"], tenants["b"]["conn"]
    master_key = h.settings.key_file
    assert master_key.is_file()
    root_secret = h.settings.data_dir.parent / "root-only.secret"
    root_secret.write_text("ROOT-ONLY-" + secrets.token_hex(8))
    root_secret.chmod(0o600)
    targets = [tenants["b"]["secret_file"], master_key, root_secret]
    script = "id -u; " + "; ".join(
        f"cat {t} 2>&1 | head -c 200; echo; echo END-{i}" for i, t in enumerate(targets)
    )
    script += f"; ls {b['socket_dir']} 2>&1; echo END-socket; true"
    assert "'" not in script
    with _superuser(a) as c:
        c.execute("CREATE TEMP TABLE out (line text)")
        c.execute(sql.SQL("COPY out FROM PROGRAM {}").format(sql.Literal(script)))
        lines = [r[0] or "" for r in c.execute("SELECT line FROM out")]
    text = "\n".join(lines)
    assert lines[0] == str(pwd.getpwnam(a["os_user"]).pw_uid)
    assert lines[0] not in (str(pwd.getpwnam(b["os_user"]).pw_uid), "0")
    assert tenants["b"]["secret"] not in text
    assert root_secret.read_text() not in text
    for i in range(len(targets)):
        part = text.split(f"END-{i}")[0].split(f"END-{i - 1}")[-1]
        assert "Permission denied" in part, part
    assert "Permission denied" in text.split("END-socket")[0].split(f"END-{len(targets) - 1}")[1]
    raw_key = master_key.read_bytes()
    assert raw_key.hex() not in text and raw_key[:16].decode("latin-1") not in text


def test_the_server_environment_holds_no_service_secret(
    tenants: dict[str, Any], canary: str
) -> None:
    for key in ("a", "b"):
        environ = Path(f"/proc/{_postmaster_pid(tenants[key]['conn'])}/environ").read_bytes()
        assert canary.encode() not in environ
        assert b"STRONGROOM_" not in environ
        assert b"SERVICE_SIDE_SECRET" not in environ


def test_the_local_socket_needs_the_password(
    tenants: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    conn = tenants["a"]["conn"]
    for user in (conn["superuser"], "app"):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(
                host=conn["socket_dir"],
                port=int(conn["port"]),
                user=user,
                dbname="postgres",
                passfile="/nonexistent",
                connect_timeout=10,
            ).close()
    hba = (Path(conn["data_dir"]) / "pg_hba.conf").read_text()
    assert "trust" not in hba and "peer" not in hba


@AS_ROOT
def test_a_short_socket_directory_is_made_where_no_tenant_can_make_its_name_first(
    base: Path,
) -> None:
    """A home whose path is too long for a socket address has its socket directory
    elsewhere, named after the home (which ids show). In /tmp a tenant's program could
    make that name first and keep the instance from starting: it goes in a directory
    of root's instead."""
    home = base / ("h" * 120)
    run = cluster.socket_dir_for(home)
    assert run.parent == cluster.PRIVATE_SOCKET_ROOT
    cluster.ensure_socket_dir(run, InstanceIdentity.current())
    try:
        st = cluster.PRIVATE_SOCKET_ROOT.lstat()
        assert st.st_uid == 0 and not st.st_mode & 0o022
        squat = run.with_name(run.name[:-1] + ("0" if run.name[-1] != "0" else "1"))
        made = subprocess.run(
            ["runuser", "-u", "nobody", "--", "mkdir", str(squat)], capture_output=True
        )
        assert made.returncode != 0 and not squat.exists()
    finally:
        shutil.rmtree(run, ignore_errors=True)


@AS_ROOT
def test_a_socket_swapped_for_another_servers_is_refused(tenants: dict[str, Any]) -> None:
    """The socket lies in the instance's home, which its OS user owns: a link to another
    server's socket in its place (here B's) is never connected to, with or without a
    password: the server at the other end runs as another user."""
    a, b = tenants["a"]["conn"], tenants["b"]["conn"]
    socket_path = Path(a["socket_dir"]) / f".s.PGSQL.{a['port']}"
    kept = socket_path.with_name(socket_path.name + ".kept")
    socket_path.rename(kept)
    try:
        socket_path.symlink_to(Path(b["socket_dir"]) / f".s.PGSQL.{b['port']}")
        for extra in ({}, {"require_auth": "none"}):  # with the password, and as a restore
            with pytest.raises(psycopg.OperationalError, match="requirepeer"):
                session.connect(a, **extra).close()
    finally:
        socket_path.unlink(missing_ok=True)
        kept.rename(socket_path)
    with session.connect(a) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


@AS_ROOT
def test_deleting_an_instance_removes_its_os_user(h: Harness) -> None:
    r = _create(h.a, "short-lived")
    assert r.status_code == 200, r.text
    instance_id = r.json()["instance"]["id"]
    _wait(h, h.a, instance_id)
    name = _connection(h, instance_id)["os_user"]
    assert name in _os_users()
    assert h.a.delete(f"/instances/{instance_id}").status_code == 202
    wait_for(lambda: h.a.get(f"/instances/{instance_id}").status_code == 404, timeout=WAIT)
    assert name not in _os_users()


@AS_ROOT
def test_a_failed_create_removes_the_os_user_it_made(base: Path) -> None:
    parent = base / ("squat-" + "q" * 70)
    parent.mkdir(mode=0o711)
    home = parent / "instance-0123456789abcdef"
    squatted = cluster.socket_dir_for(home)
    squatted.parent.mkdir(mode=0o711, exist_ok=True)
    squatted.mkdir(mode=0o777)  # someone took the socket directory's name first
    try:
        with pytest.raises(InstanceError, match="not a private directory"):
            PostgresEngine(timeout=120).create_instance(home, InstanceRequest("q"))
    finally:
        shutil.rmtree(squatted, ignore_errors=True)
    assert not home.exists() and name_for(home) not in _os_users()


@AS_ROOT
def test_an_instance_whose_socket_was_under_tmp_moves_it_on_start(base: Path) -> None:
    """An earlier release put a long home's socket directory under /tmp: started again,
    the server listens where this release puts it, and the connection says so."""
    parent = base / ("long-" + "l" * 70)
    parent.mkdir(mode=0o711)
    home = parent / "instance-0123456789abcdef"
    engine = PostgresEngine(timeout=120)
    old = Path(tempfile.mkdtemp(prefix="strongroom-pg-"))
    conn = engine.create_instance(home, InstanceRequest("q"))
    try:
        engine.stop_instance(home, conn)
        server_user = pwd.getpwnam(conn["os_user"])
        os.chown(old, server_user.pw_uid, server_user.pw_gid)
        conf = Path(conn["data_dir"]) / "strongroom.conf"
        text = conf.read_text().replace(conn["socket_dir"], str(old))
        conf.write_text(text)
        conn = dict(conn, socket_dir=str(old))
        started = engine.start_instance(home, conn)
        assert started["socket_dir"] == str(cluster.socket_dir_for(home)) != str(old)
        with session.connect(started) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        engine.destroy_instance(home, conn)
        shutil.rmtree(old, ignore_errors=True)


# -- instances made before each server had its own user and a password on the socket --------


@AS_ROOT
def test_an_instance_of_the_shared_postgres_user_with_trust_is_moved_on_start(
    base: Path,
) -> None:
    engine = PostgresEngine(timeout=120)
    home = base / "legacy"
    conn = engine.create_instance(home, InstanceRequest("l", (DatabaseSpec("d"),)))
    with psycopg.connect(**_local(conn, "d"), autocommit=True) as c:
        c.execute(
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g"
        )
    before = snapshot(conn, "d")
    # As the previous release left it: run by `postgres`, trust on the socket.
    engine.stop_instance(home, conn)
    postgres = pwd.getpwnam("postgres")
    for path in (home, *home.rglob("*")):
        os.chown(path, postgres.pw_uid, postgres.pw_gid, follow_symlinks=False)
    (home / "data" / "pg_hba.conf").write_text(
        "local all all trust\nlocal replication all trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )
    legacy = {k: v for k, v in conn.items() if k != "os_user"}
    engine_user = pwd.getpwnam(conn["os_user"])
    old = InstanceIdentity.lookup(conn["os_user"])
    assert old is not None
    old.remove()  # the previous release made none
    assert conn["os_user"] not in _os_users()
    # Another server of the shared user could have left a hard link to its own file here.
    other = base / "other-server-file"
    other.write_text("another server's data")
    os.chown(other, postgres.pw_uid, postgres.pw_gid)
    os.link(other, home / "data" / "base" / "planted")
    try:
        with pytest.raises(InstanceError, match="hard links"):
            engine.start_instance(home, legacy)
        assert other.stat().st_uid == postgres.pw_uid
        os.unlink(home / "data" / "base" / "planted")
        started = engine.start_instance(home, legacy)
        assert started["os_user"] == name_for(home)
        uid = pwd.getpwnam(started["os_user"]).pw_uid
        assert uid != postgres.pw_uid and engine_user.pw_name == started["os_user"]
        status = Path(f"/proc/{_postmaster_pid(started)}/status").read_text()
        assert f"Uid:\t{uid}\t" in status
        assert all(p.lstat().st_uid == uid for p in (home, *home.rglob("*")))
        assert "trust" not in (home / "data" / "pg_hba.conf").read_text()
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(**{**_local(started, "d"), "password": None}, passfile="/nonexistent")
        assert snapshot(started, "d") == before
    finally:
        engine.destroy_instance(home, legacy)
    assert not home.exists() and name_for(home) not in _os_users()


def _local(conn: dict[str, Any], dbname: str) -> dict[str, Any]:
    return {
        "host": conn["socket_dir"],
        "port": int(conn["port"]),
        "user": conn["superuser"],
        "password": conn["password"],
        "dbname": dbname,
        "connect_timeout": 10,
    }


# -- a tenant that swaps directories of its data directory during a backup ----------------


class SlowSink(FileSink):
    """A sink that takes ``rate`` bytes a second, so the backup's walk is long enough to
    race (a throttle on the backup, not a wait for an outcome)."""

    def __init__(self, path: Path, started: threading.Event, rate: float) -> None:
        super().__init__(path, on_first_write=started.set)
        self._rate = rate

    def write(self, data: bytes, /) -> int:
        n = super().write(data)
        time.sleep(n / self._rate)
        return n


class Swapper(threading.Thread):
    """Renames ``victim`` away, puts a link to ``lure`` in its place, puts it back: again
    and again until told to stop or ``limit`` swaps are done (bounded either way). Each
    state is held for ``hold`` seconds, so the swaps cover the backup's walk."""

    def __init__(self, victim: Path, lure: Path, limit: int = 2000, hold: float = 0.001) -> None:
        super().__init__(daemon=True)
        self.victim, self.lure, self.limit, self.hold = victim, lure, limit, hold
        self.away = victim.with_name(victim.name + ".away")
        self.stop = threading.Event()
        self.swaps = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set() and self.swaps < self.limit:
                os.rename(self.victim, self.away)
                os.symlink(self.lure, self.victim)
                self.swaps += 1
                self.stop.wait(self.hold)
                os.unlink(self.victim)
                os.rename(self.away, self.victim)
                self.stop.wait(self.hold)
        except BaseException as exc:
            self.error = exc
        finally:
            if self.victim.is_symlink():
                os.unlink(self.victim)
            if self.away.exists():
                os.rename(self.away, self.victim)


def test_a_directory_swapped_for_a_link_during_a_file_backup_is_never_read(
    base: Path,
) -> None:
    engine = PostgresEngine(timeout=120)
    home = base / "swapped"
    # The victim is made first: its directory (the lower oid) is walked before the bulk.
    conn = engine.create_instance(
        home, InstanceRequest("s", (DatabaseSpec("victim"), DatabaseSpec("bulk")))
    )
    lure = base / "lure"
    lure.mkdir(mode=0o755)
    canary = ("CANARY-" + secrets.token_hex(16)).encode()
    for name in ("PG_VERSION", "1259", "canary"):
        (lure / name).write_bytes(canary * 64)
    try:
        with psycopg.connect(**_local(conn, "bulk"), autocommit=True) as c:
            c.execute(
                "CREATE TABLE filler AS SELECT g AS id, repeat(md5(g::text), 4) AS v "
                "FROM generate_series(1, 150000) g"
            )
        with psycopg.connect(**_local(conn, "victim"), autocommit=True) as c:
            c.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")
            oid = c.execute("SELECT oid FROM pg_database WHERE datname = 'victim'").fetchone()[0]  # type: ignore[index]
            c.execute("CHECKPOINT")  # nothing of it left for the backup's checkpoint to write
        victim = Path(conn["data_dir"]) / "base" / str(oid)
        outcomes: list[str] = []
        deadline = time.monotonic() + 25
        for attempt in range(3):  # bounded: a few backups, each raced while it runs
            started = threading.Event()
            stream = base / f"swapped-{attempt}.stream"
            sink = SlowSink(stream, started, rate=20e6)
            swapper = Swapper(victim, lure)
            result: dict[str, Any] = {}

            def run_backup(sink: SlowSink = sink, result: dict[str, Any] = result) -> None:
                try:
                    result["meta"] = engine.backup(conn, sink, parent=None).metadata
                except BackupError as exc:
                    result["error"] = str(exc)

            runner = threading.Thread(target=run_backup, daemon=True)
            runner.start()
            assert started.wait(60), "the backup did not start"
            swapper.start()
            runner.join(90)
            swapper.stop.set()
            swapper.join(30)
            sink.close()
            assert not runner.is_alive() and not swapper.is_alive()
            assert swapper.error is None, swapper.error
            assert victim.is_dir() and not victim.is_symlink()
            assert canary not in stream.read_bytes()
            overlapped = "error" in result or swapper.swaps < swapper.limit
            if "error" in result:
                assert "link" in result["error"] or "replaced" in result["error"], result
                outcomes.append(f"failed after {swapper.swaps} swaps: {result['error']}")
            else:
                outcomes.append(f"completed ({swapper.swaps} swaps, overlapped={overlapped})")
                _restore_and_look_for(
                    engine, base / f"swapped-r{attempt}", result["meta"], stream, canary
                )
            if time.monotonic() > deadline:
                break
        print("\npath swap race:", outcomes)
        # The swaps went on until the backup ended at least once: the race was run.
        assert any("failed" in o or "overlapped=True" in o for o in outcomes), outcomes
    finally:
        engine.destroy_instance(home, conn)


def _restore_and_look_for(
    engine: PostgresEngine, home: Path, meta: dict[str, Any], stream: Path, canary: bytes
) -> None:
    source = OffsetFileSource(stream)
    try:
        try:
            restored = engine.restore_instance(
                home, [RestoreInput(meta, source)], InstanceRequest("r")
            )
        except RestoreError:
            return  # the tenant broke its own backup; nothing of anyone else's got in
    finally:
        source.close()
    try:
        for path in home.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert canary not in path.read_bytes(), path
    finally:
        engine.destroy_instance(home, restored)


@AS_ROOT
def test_a_hard_link_or_a_link_in_the_data_directory_fails_the_backup(base: Path) -> None:
    engine = PostgresEngine(timeout=120)
    home = base / "linked"
    conn = engine.create_instance(home, InstanceRequest("k"))
    secret = base / "root.secret"
    secret.write_bytes(b"ROOT-SECRET-" + secrets.token_hex(8).encode())
    secret.chmod(0o600)
    data = Path(conn["data_dir"])
    try:
        for plant, reason in (
            (lambda p: os.link(secret, p), "does not belong"),  # protected_hardlinks off
            (lambda p: os.symlink(secret, p), "symbolic link"),
        ):
            planted = data / "base" / "1" / "99999"
            plant(planted)
            stream = base / "linked.stream"
            sink = FileSink(stream)
            try:
                with pytest.raises(BackupError, match=reason):
                    engine.backup(conn, sink, parent=None)
            finally:
                sink.close()
                planted.unlink()
            assert secret.read_bytes() not in stream.read_bytes()
    finally:
        engine.destroy_instance(home, conn)


def test_socket_directory_under_tmp_is_made_through_a_descriptor(base: Path) -> None:
    parent = base / ("long-" + "z" * 70)
    parent.mkdir(mode=0o711)
    home = parent / "instance-0123456789abcdef"
    run = cluster.socket_dir_for(home)
    assert not run.is_relative_to(home)
    engine = PostgresEngine(timeout=120)
    conn = engine.create_instance(home, InstanceRequest("t"))
    try:
        st = run.lstat()
        assert st.st_mode & 0o777 == 0o700 and not run.is_symlink()
        if os.geteuid() == 0:
            assert st.st_uid == pwd.getpwnam(conn["os_user"]).pw_uid
    finally:
        engine.destroy_instance(home, conn)
    assert not run.exists()
