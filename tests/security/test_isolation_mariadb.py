"""MariaDB tenant isolation, attacked against real servers.

A tenant may learn its instance's superuser credentials (the connection's admin account):
these tests use them as such a tenant would. With them it must not read or write files of
the host or of another instance, nor see the service's environment. Reserved account names
are refused before anything exists, requested users get their own databases only, and each
managed instance runs as an OS user of its own (when the service runs as root) that goes
away with it.
"""

from __future__ import annotations

import contextlib
import io
import os
import pwd
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from fixtures.service import make_harness
from security.wire import assert_fault
from strongroom.engines import process
from strongroom.engines.base import DatabaseSpec, InstanceRequest, RestoreInput, UserSpec
from strongroom.engines.errors import InstanceError, InvalidRequestError, RestoreError
from strongroom.engines.identity import InstanceIdentity, name_for
from strongroom.engines.mariadb import MariaDbEngine, accounts, server
from support.mariadb import require_mariadb, scratch_root
from support.tenant_daemons import assert_removal_survives_swaps

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="OS users per instance need root")

CANARY_NAME = "STRONGROOM_ISOLATION_CANARY"
CANARY = "canary-" + secrets.token_hex(8)
BOB_PASSWORD = "bob-Secret-3"
REQUEST = InstanceRequest(
    "tenant",
    databases=(DatabaseSpec("app"),),
    users=(
        UserSpec("bob", BOB_PASSWORD, ("app", "mysq_")),
        UserSpec("carol", "carol-Secret-4", ("app",), "%.example.com"),
    ),
)
DENIED = 1290  # ER_OPTION_PREVENTS_STATEMENT: --secure-file-priv


class Instances:
    def __init__(self, engine: MariaDbEngine, base: Path) -> None:
        self.engine = engine
        self.base = base
        self.made: list[tuple[Path, dict[str, Any]]] = []

    def create(self, name: str, request: InstanceRequest = REQUEST) -> tuple[Path, dict[str, Any]]:
        home = self.base / name
        conn = self.engine.create_instance(home, request)
        self.made.append((home, conn))
        return home, conn

    def close(self) -> None:
        for home, conn in reversed(self.made):
            with contextlib.suppress(Exception):
                self.engine.destroy_instance(home, conn)


def as_tenant_root(conn: dict[str, Any]) -> pymysql.connections.Connection:
    """The instance's superuser, as a tenant holding its credentials would be (the account
    is local to the server's host: the socket is the way in)."""
    return pymysql.connect(
        unix_socket=conn["socket"],
        user=conn["admin_user"],
        password=conn["admin_password"],
        autocommit=True,
    )


def one(conn: dict[str, Any], sql: str, args: Any = None) -> Any:
    db = as_tenant_root(conn)
    try:
        with db.cursor() as cur:
            cur.execute(sql, args)
            row = cur.fetchone()
            return None if row is None else row[0]
    finally:
        db.close()


def server_pid(home: Path) -> int:
    pid = server.running_pid(server.Layout(home))
    assert pid is not None
    return pid


@pytest.fixture(scope="module")
def engine() -> MariaDbEngine:
    return require_mariadb()


@pytest.fixture(scope="module")
def base(engine: MariaDbEngine) -> Iterator[Path]:
    with scratch_root("sr-mdb-iso-") as path:
        yield path


@pytest.fixture(scope="module")
def instances(engine: MariaDbEngine, base: Path) -> Iterator[Instances]:
    made = Instances(engine, base)
    yield made
    made.close()


@pytest.fixture(scope="module")
def two(instances: Instances) -> tuple[tuple[Path, dict[str, Any]], tuple[Path, dict[str, Any]]]:
    """Two tenants' instances, created while the service's environment holds a secret."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CANARY_NAME, CANARY)
        return instances.create("a"), instances.create("b")


# -- requests ---------------------------------------------------------------------------------
def test_reserved_names_are_refused_with_400_and_nothing_is_created(base: Path) -> None:
    root = base / "service"
    root.mkdir()
    h = make_harness(root, datastores=["mariadb"])
    try:
        refused: list[dict[str, Any]] = [
            {"users": [{"name": name, "password": "pw"}]}
            for name in (
                "root",
                "mysql",
                "mysql.sys",
                "mysql.session",
                "mariadb.sys",
                accounts.ADMIN_USER,
                accounts.BACKUP_USER,
                "x" * 81,
                "bob\x01",
            )
        ]
        refused += [{"databases": [{"name": name}]} for name in ("mysql", "sys", "%", "a.b")]
        refused += [{"users": [{"name": "bob", "password": "pw", "host": "a b"}]}]
        for extra in refused:
            body = {"instance": {"name": "x", "datastore": {"type": "mariadb"}, **extra}}
            fault = assert_fault(h.a.post("/instances", body), 400)
            assert "badRequest" in fault, fault
        assert h.a.get("/instances").json()["instances"] == []
        instances_dir = h.settings.data_dir / "instances"
        assert not instances_dir.exists() or list(instances_dir.iterdir()) == []
    finally:
        h.container.close()


def test_requested_users_get_their_own_databases_only(
    two: tuple[tuple[Path, dict[str, Any]], ...],
) -> None:
    (_, conn), _ = two
    db = as_tenant_root(conn)
    try:
        with db.cursor() as cur:
            cur.execute("SHOW GRANTS FOR 'bob'@'%'")
            grants = [row[0] for row in cur.fetchall()]
            cur.execute("SHOW GRANTS FOR 'carol'@'%.example.com'")
            carol = [row[0] for row in cur.fetchall()]
    finally:
        db.close()
    assert grants[0].startswith("GRANT USAGE ON *.* TO `bob`@`%`")
    assert sorted(grants[1:]) == [
        "GRANT ALL PRIVILEGES ON `app`.* TO `bob`@`%`",
        "GRANT ALL PRIVILEGES ON `mysq\\_`.* TO `bob`@`%`",
    ]
    for text in grants + carol:
        for privilege in ("FILE", "SUPER", "PROCESS", "GRANT OPTION", "ON *.* TO"):
            if privilege == "ON *.* TO" and text.startswith("GRANT USAGE ON *.*"):
                continue
            assert privilege not in text, text
    # "mysq_" is that database only, not a pattern that reaches "mysql".
    bob = pymysql.connect(
        host=conn["host"], port=conn["port"], user="bob", password=BOB_PASSWORD, autocommit=True
    )
    try:
        with bob.cursor() as cur:
            for sql in (
                "SELECT COUNT(*) FROM mysql.global_priv",
                "UPDATE mysql.global_priv SET Priv = '{}' WHERE User = 'root'",
            ):
                with pytest.raises(pymysql.err.OperationalError) as caught:
                    cur.execute(sql)
                assert caught.value.args[0] in (1142, 1044), caught.value
            cur.execute("SELECT LOAD_FILE('/etc/passwd')")
            assert cur.fetchone()[0] is None
            cur.execute("CREATE TABLE app.t (x INT)")
    finally:
        bob.close()
    view = MariaDbEngine().public_view(conn)["users"]
    assert view == [
        {"name": "bob", "host": "%", "databases": ["app", "mysq_"]},
        {"name": "carol", "host": "%.example.com", "databases": ["app"]},
    ]


def test_an_existing_account_is_never_altered(
    two: tuple[tuple[Path, dict[str, Any]], ...],
) -> None:
    (_, conn), _ = two
    db = as_tenant_root(conn)
    try:
        with db.cursor() as cur:
            again = InstanceRequest("x", users=(UserSpec("bob", "taken-over-1", ("app",)),))
            with pytest.raises(InvalidRequestError, match="already exists"):
                accounts.apply_request(cur, again)
            with pytest.raises(InvalidRequestError, match="reserved"):
                accounts.apply_request(
                    cur, InstanceRequest("x", users=(UserSpec("root", "pw", (), "localhost"),))
                )
    finally:
        db.close()
    pymysql.connect(host=conn["host"], port=conn["port"], user="bob", password=BOB_PASSWORD).close()


# -- files and environment ------------------------------------------------------------------------
def test_tenant_superuser_reads_and_writes_no_file_outside_its_own(
    two: tuple[tuple[Path, dict[str, Any]], ...], base: Path
) -> None:
    (home_a, conn_a), (home_b, _) = two
    root_only = base / "root-only-secret"
    root_only.write_text("root's secret\n")
    os.chmod(root_only, 0o600)
    others = [
        home_b / "my.cnf",
        home_b / "data" / "ibdata1",
        home_b / "data" / "mysql" / "global_priv.MAD",
        root_only,
        Path("/etc/shadow"),
    ]
    # LOAD_FILE does work, in the instance's own files directory (so NULL below means refused).
    own = home_a / "files" / "note.txt"
    one(conn_a, "SELECT 'mine' INTO OUTFILE %s", (str(own),))
    assert one(conn_a, "SELECT LOAD_FILE(%s)", (str(own),)) == b"mine\n"
    for path in others:
        assert one(conn_a, "SELECT LOAD_FILE(%s)", (str(path),)) is None, path
    outside = Path("/tmp") / f"sr-outfile-{secrets.token_hex(6)}"
    db = as_tenant_root(conn_a)
    try:
        with db.cursor() as cur:
            for sql, args in (
                ("SELECT 'x' INTO OUTFILE %s", (str(outside),)),
                ("SELECT 'x' INTO DUMPFILE %s", (str(home_b / "files" / "planted"),)),
                ("LOAD DATA INFILE %s INTO TABLE mysql.help_topic", (str(root_only),)),
            ):
                with pytest.raises(pymysql.err.MySQLError) as caught:
                    cur.execute(sql, args)
                assert caught.value.args[0] == DENIED, caught.value
            # Server logs are files too: point one at the other instance's home.
            cur.execute("SELECT @@general_log_file")
            (log_file,) = cur.fetchone()
            with contextlib.suppress(pymysql.MySQLError):
                cur.execute("SET GLOBAL general_log_file = %s", (str(home_b / "files" / "g.log"),))
                cur.execute("SET GLOBAL general_log = ON")
                cur.execute("SELECT 'logged'")
            with contextlib.suppress(pymysql.MySQLError):
                cur.execute("SET GLOBAL general_log = OFF")
                cur.execute("SET GLOBAL general_log_file = %s", (log_file,))
            # And tables: InnoDB writes a table wherever DATA DIRECTORY says, as the server.
            if os.geteuid() == 0:
                for where in (home_b / "files", base):
                    with pytest.raises(pymysql.err.MySQLError):
                        cur.execute(
                            f"CREATE TABLE app.planted (x INT) ENGINE=InnoDB "
                            f"DATA DIRECTORY = '{where}'"
                        )
    finally:
        db.close()
    assert not list(home_b.rglob("planted*")) and not list(base.glob("app"))
    assert not outside.exists()
    assert not (home_b / "files" / "planted").exists()
    if os.geteuid() == 0:
        assert not (home_b / "files" / "g.log").exists()


def test_servers_see_nothing_of_the_service_environment(
    two: tuple[tuple[Path, dict[str, Any]], ...],
) -> None:
    assert os.environ.get(CANARY_NAME) is None  # set only while the servers were created
    for home, _ in two:
        environ = Path(f"/proc/{server_pid(home)}/environ").read_bytes()
        assert b"STRONGROOM" not in environ
        assert CANARY.encode() not in environ


# -- OS users -------------------------------------------------------------------------------------
@AS_ROOT
def test_each_instance_runs_as_its_own_os_user_in_a_private_home(
    two: tuple[tuple[Path, dict[str, Any]], ...],
) -> None:
    uids = set()
    for home, conn in two:
        assert conn["os_user"] == name_for(home)
        entry = pwd.getpwnam(conn["os_user"])
        assert entry.pw_uid != 0 and entry.pw_shell.endswith("nologin")
        assert Path(f"/proc/{server_pid(home)}").stat().st_uid == entry.pw_uid
        for path in (home, home / "data", home / "tmp", home / "files", home / "private"):
            st = path.stat()
            assert stat.S_IMODE(st.st_mode) == 0o700, path
            assert st.st_uid == entry.pw_uid, path
        uids.add(entry.pw_uid)
    assert len(uids) == 2
    # No password-less superuser for the OS user (mariadb-install-db makes one).
    _, conn = two[0]
    assert one(conn, "SELECT COUNT(*) FROM mysql.global_priv WHERE User LIKE 'sr-%'") == 0


@AS_ROOT
def test_backups_and_restores_run_as_the_instance_os_user(
    engine: MariaDbEngine,
    instances: Instances,
    two: tuple[tuple[Path, dict[str, Any]], ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (_, conn), _ = two
    argvs: list[list[str]] = []
    for name in ("run", "stream_in", "stream_out"):
        original = getattr(process, name)

        def spy(argv: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            argvs.append([str(a) for a in argv])
            return _original(argv, *args, **kwargs)

        monkeypatch.setattr(process, name, spy)
    path = instances.base / "a.xb"
    with path.open("wb") as sink:
        meta = engine.backup(conn, sink, parent=None).metadata
    assert argvs[0][:4] == ["runuser", "-u", conn["os_user"], "--"]
    assert "--backup" in argvs[0]
    argvs.clear()
    home = instances.base / "restored"
    with path.open("rb") as source:
        restored = engine.restore_instance(
            home, [RestoreInput(meta, source)], InstanceRequest("restored")
        )
    instances.made.append((home, restored))
    assert restored["os_user"] == name_for(home) != conn["os_user"]
    tools = [argv for argv in argvs if "mbstream" in argv[4] or "backup" in argv[4]]
    assert tools and all(argv[:4] == ["runuser", "-u", restored["os_user"], "--"] for argv in tools)
    restored_uid = pwd.getpwnam(restored["os_user"]).pw_uid
    assert Path(f"/proc/{server_pid(home)}").stat().st_uid == restored_uid
    # The source's OS-user account did not come along; the tenant's users did.
    assert one(restored, "SELECT COUNT(*) FROM mysql.global_priv WHERE User LIKE 'sr-%'") == 0
    assert [u["name"] for u in engine.public_view(restored)["users"]] == ["bob", "carol"]


@AS_ROOT
def test_removal_never_follows_or_blocks_on_what_a_daemon_of_the_tenant_swaps_in(
    engine: MariaDbEngine, instances: Instances
) -> None:
    """As for PostgreSQL (support.tenant_daemons): a daemon of the instance's user swaps
    directories of its home for links to a FIFO while the instance is removed."""
    home, conn = instances.create("swapped", InstanceRequest("s"))
    assert_removal_survives_swaps(
        instances.base, home, conn["os_user"], lambda: engine.destroy_instance(home, conn)
    )


@AS_ROOT
def test_the_os_user_goes_with_the_instance(
    engine: MariaDbEngine, instances: Instances, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, conn = instances.create("short-lived", InstanceRequest("x"))
    assert pwd.getpwnam(conn["os_user"])
    backup = io.BytesIO()
    meta = engine.backup(conn, backup, parent=None).metadata
    engine.destroy_instance(home, conn)
    assert not home.exists()
    with pytest.raises(KeyError):
        pwd.getpwnam(conn["os_user"])

    def broken(cursor: Any, request: InstanceRequest) -> None:
        raise pymysql.err.OperationalError(2013, "Lost connection to server during query")

    monkeypatch.setattr(accounts, "apply_request", broken)
    failed = instances.base / "failed"
    with pytest.raises(InstanceError, match="Lost connection"):
        engine.create_instance(failed, InstanceRequest("x"))
    assert not failed.exists()
    assert InstanceIdentity.lookup(name_for(failed)) is None
    truncated = io.BytesIO(backup.getvalue()[: len(backup.getvalue()) // 2])
    with pytest.raises(RestoreError):
        engine.restore_instance(failed, [RestoreInput(meta, truncated)], InstanceRequest("x"))
    assert not failed.exists()
    assert InstanceIdentity.lookup(name_for(failed)) is None


@AS_ROOT
def test_an_instance_from_before_os_users_is_handed_one_on_start(
    engine: MariaDbEngine, instances: Instances
) -> None:
    home, conn = instances.create("legacy", InstanceRequest("x", (DatabaseSpec("app"),)))
    one(conn, "CREATE TABLE app.kept (x INT)")
    one(conn, "INSERT INTO app.kept VALUES (42)")
    engine.stop_instance(home, conn)
    # As such an instance was: files of "mysql", home 0750, no secure_file_priv, no os_user.
    layout = server.Layout(home)
    server.chown_tree(home, InstanceIdentity.lookup("mysql"))  # type: ignore[arg-type]
    os.chmod(home, 0o750)
    text = layout.config.read_text().replace(f'user = "{conn["os_user"]}"', 'user = "mysql"')
    text = "\n".join(line for line in text.splitlines() if "secure_file_priv" not in line)
    layout.config.write_text(text + "\n")
    mysql = pwd.getpwnam("mysql")
    os.chown(layout.config, mysql.pw_uid, mysql.pw_gid)
    InstanceIdentity.lookup(conn["os_user"]).remove()  # type: ignore[union-attr]
    legacy = {k: v for k, v in conn.items() if k != "os_user"}

    started = engine.start_instance(home, legacy)
    instances.made.append((home, started))
    uid = pwd.getpwnam(started["os_user"]).pw_uid
    assert started["os_user"] == name_for(home)
    assert Path(f"/proc/{server_pid(home)}").stat().st_uid == uid
    assert home.stat().st_uid == uid and stat.S_IMODE(home.stat().st_mode) == 0o700
    assert (home / "data" / "ibdata1").stat().st_uid == uid
    assert one(started, "SELECT @@secure_file_priv").rstrip("/") == str(home / "files")
    assert one(started, "SELECT x FROM app.kept") == 42
    assert layout.config.stat().st_uid == os.geteuid()  # the option file is the service's


# -- what the service reads and starts from a home the tenant owns ------------------------------
def _ids(pid: int) -> dict[str, list[str]]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        key: value.split()
        for key, _, value in (line.partition(":") for line in status.splitlines())
        if key in ("Uid", "Gid", "Groups")
    }


def _service_secret(base: Path) -> Path:
    """A file only the service may read, as its key is."""
    secret = base / f"secret-{secrets.token_hex(4)}"
    secret.write_text(f"{CANARY}\n" * 20)
    os.chmod(secret, 0o600)
    return secret


@AS_ROOT
def test_the_server_runs_as_its_own_user_whatever_its_option_file_says(
    engine: MariaDbEngine, instances: Instances
) -> None:
    """Started as its OS user from exec on, the server cannot become root, even when the
    option file (in a home that user owns) names root."""
    home, conn = instances.create("never-root", InstanceRequest("x"))
    engine.stop_instance(home, conn)
    server.set_server_options(server.Layout(home), {"user": "root"})
    engine.start_instance(home, conn)
    entry = pwd.getpwnam(conn["os_user"])
    ids = _ids(server_pid(home))
    assert ids["Uid"] == [str(entry.pw_uid)] * 4
    assert ids["Gid"] == [str(entry.pw_gid)] * 4
    assert set(ids["Groups"]) <= {str(entry.pw_gid)}


@AS_ROOT
def test_an_option_file_the_tenant_replaced_gains_it_nothing(
    engine: MariaDbEngine, instances: Instances, base: Path
) -> None:
    """The tenant owns the home, so it can rename the service's option file and put its
    own in its place: saying ``user = root`` there starts nothing as root; a link to the
    service's secret, or another name of it, is not read, and nothing of it is quoted."""
    home, conn = instances.create("replaced-cnf", InstanceRequest("x"))
    engine.stop_instance(home, conn)
    layout = server.Layout(home)
    entry = pwd.getpwnam(conn["os_user"])
    text = layout.config.read_text()
    os.rename(layout.config, home / "my.cnf.service")
    layout.config.write_text(text.replace(f'user = "{conn["os_user"]}"', 'user = "root"'))
    os.chown(layout.config, entry.pw_uid, entry.pw_gid)
    engine.start_instance(home, conn)
    assert _ids(server_pid(home))["Uid"] == [str(entry.pw_uid)] * 4
    engine.stop_instance(home, conn)
    secret = _service_secret(base)
    layout.config.unlink()
    layout.config.symlink_to(secret)
    with pytest.raises(InstanceError) as info:
        engine.start_instance(home, conn)
    assert CANARY not in str(info.value)
    assert server.running_pid(layout) is None
    layout.config.unlink()
    os.link(secret, layout.config)  # root may; a tenant could where hard links are free
    with pytest.raises(InstanceError, match="not the service's") as info:
        engine.start_instance(home, conn)
    assert CANARY not in str(info.value) and server.running_pid(layout) is None
    layout.config.unlink()
    os.rename(home / "my.cnf.service", layout.config)
    engine.start_instance(home, conn)  # the service's own file back: it starts
    assert one(conn, "SELECT 1") == 1


@AS_ROOT
def test_an_option_file_a_previous_hand_over_gave_to_the_instance_still_starts(
    engine: MariaDbEngine, instances: Instances
) -> None:
    """An earlier release handed the whole home, option file included, to the instance's
    user: such an instance starts, as its user."""
    home, conn = instances.create("handed-cnf", InstanceRequest("x"))
    engine.stop_instance(home, conn)
    entry = pwd.getpwnam(conn["os_user"])
    os.chown(server.Layout(home).config, entry.pw_uid, entry.pw_gid)
    started = engine.start_instance(home, conn)
    assert _ids(server_pid(home))["Uid"] == [str(entry.pw_uid)] * 4
    assert started["port"] > 0 and one(conn, "SELECT 1") == 1


@AS_ROOT
def test_the_log_and_pid_file_are_read_through_no_link_fifo_or_hard_link(
    engine: MariaDbEngine, instances: Instances, base: Path
) -> None:
    """A failed start quotes the server's log: a log that is a link to the service's
    secret quotes nothing of it, a FIFO blocks nothing, a huge log is read in part."""
    home, conn = instances.create("log-links", InstanceRequest("x"))
    engine.stop_instance(home, conn)
    layout = server.Layout(home)
    secret = _service_secret(base)
    for name in (server.LOG_NAME, server.PID_NAME):
        (home / name).unlink(missing_ok=True)
        (home / name).symlink_to(secret)
    assert server.log_tail(layout) == "" and server.read_pid(layout) is None
    server.set_server_options(layout, {"no-such-option": "1"})  # the start fails
    with pytest.raises(InstanceError, match="exited") as info:
        engine.start_instance(home, conn)
    assert CANARY not in str(info.value)
    for name in (server.LOG_NAME, server.PID_NAME):
        (home / name).unlink()
        os.link(secret, home / name)  # root may; a tenant could where hard links are free
    assert server.log_tail(layout) == "" and server.read_pid(layout) is None
    for name in (server.LOG_NAME, server.PID_NAME):
        (home / name).unlink()
        os.mkfifo(home / name)
    assert server.log_tail(layout) == "" and server.read_pid(layout) is None
    (home / server.LOG_NAME).unlink()
    with (home / server.LOG_NAME).open("wb") as log:
        log.truncate(1 << 32)  # sparse: 4 GiB of zeros, then the last line
        log.seek(0, os.SEEK_END)
        log.write(b"\nthe last line\n")
    assert server.log_tail(layout).endswith("the last line")


@AS_ROOT
def test_the_backup_scratch_directory_stays_the_services(
    engine: MariaDbEngine,
    two: tuple[tuple[Path, dict[str, Any]], ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """mariabackup (the instance's user) writes into directories of its own inside a
    scratch directory it may only pass through: what the service makes there by name
    cannot be renamed or swapped for a link meanwhile."""
    (_, conn), _ = two
    uid = pwd.getpwnam(conn["os_user"]).pw_uid
    seen: dict[str, tuple[int, int]] = {}
    original = process.stream_out

    def spy(argv: Any, *args: Any, **kwargs: Any) -> Any:
        scratch = Path(kwargs["cwd"])
        for name in ("", "target", "lsn"):
            st = (scratch / name).lstat()
            seen[name] = (st.st_uid, stat.S_IMODE(st.st_mode))
        # The password reaches the tool as an inherited descriptor, never by a name.
        assert sorted(p.name for p in scratch.iterdir()) == ["lsn", "target"]
        return original(argv, *args, **kwargs)

    monkeypatch.setattr(process, "stream_out", spy)
    sink = io.BytesIO()
    engine.backup(conn, sink, parent=None)
    assert sink.tell() > 0
    assert seen == {
        "": (os.geteuid(), 0o711),
        "target": (uid, 0o700),
        "lsn": (uid, 0o700),
    }
