"""What the service writes into and reads from a managed server's home, as root, while the
server's OS user (a tenant) may have put links there."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from strongroom.engines import beneath
from strongroom.engines.identity import InstanceIdentity
from strongroom.engines.postgresql.server import ManagedServer


def _server(home: Path) -> ManagedServer:
    (home / "data").mkdir(parents=True)
    (home / "log").mkdir()
    return ManagedServer(
        home,
        InstanceIdentity.current(),
        bin_dir=Path("/nonexistent"),
        bind_address="127.0.0.1",
        timeout=10,
    )


def test_a_file_written_replaces_a_link_and_never_writes_through_it(tmp_path: Path) -> None:
    server = _server(tmp_path / "home")
    secret = tmp_path / "secret"
    secret.write_text("keep me")
    os.symlink(secret, server.data / "strongroom-port.conf")
    server.write_file("strongroom-port.conf", "port = 5433\n")
    assert secret.read_text() == "keep me"
    written = server.data / "strongroom-port.conf"
    assert not written.is_symlink() and written.read_text() == "port = 5433\n"
    assert written.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in server.data.iterdir()] == ["strongroom-port.conf"]  # no temp left


def test_a_hard_link_is_replaced_not_written_through(tmp_path: Path) -> None:
    server = _server(tmp_path / "home")
    other = tmp_path / "other"
    other.write_text("someone else's")
    os.link(other, server.data / "pg_hba.conf")
    server.write_file("pg_hba.conf", "local all all scram-sha-256\n")
    assert other.read_text() == "someone else's"


def test_the_data_directory_swapped_for_a_link_is_refused(tmp_path: Path) -> None:
    server = _server(tmp_path / "home")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.rename(server.data, tmp_path / "data.away")
    os.symlink(elsewhere, server.data)
    with pytest.raises(beneath.EscapeError):
        server.write_file("postgresql.conf", "x")
    assert list(elsewhere.iterdir()) == []


def test_the_log_read_for_a_failure_reason_is_never_a_link(tmp_path: Path) -> None:
    server = _server(tmp_path / "home")
    secret = tmp_path / "master.key"
    secret.write_text("MASTER-KEY-BYTES")
    os.symlink(secret, server.log)
    assert server.log_since(0) == ""
    assert server.log_size() == 0
    with pytest.raises(beneath.EscapeError):
        server.read_file("log/postgresql.log", 100)
    os.unlink(server.log)
    server.log.write_text("FATAL: could not bind\n")
    assert server.log_since(0) == "FATAL: could not bind"


def test_only_the_servers_own_files_are_read(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file away")
    home = tmp_path / "home"
    server = _server(home)
    server.identity = InstanceIdentity("nobody", 65534, 65534)
    server.log.write_text("root's file, hard-linked in by the tenant\n")
    with pytest.raises(beneath.EscapeError, match="not the server's"):
        server.read_file("log/postgresql.log", 100)


@pytest.mark.skipif(os.geteuid() != 0, reason="gives files to another user: needs root")
def test_the_tree_is_given_to_the_user_and_what_is_theirs_is_left_alone(tmp_path: Path) -> None:
    nobody = InstanceIdentity.lookup("nobody")
    assert nobody is not None and nobody.owner is not None
    home = tmp_path / "home"
    (home / "data" / "base").mkdir(parents=True)
    (home / "data" / "base" / "1").write_text("root's")
    theirs = home / "data" / "base" / "2"
    theirs.write_text("already the user's")
    os.chown(theirs, *nobody.owner)
    os.symlink("/etc/passwd", home / "data" / "link")
    before = theirs.stat().st_ctime_ns
    time.sleep(0.01)  # a chown would move the ctime on by at least this
    server = ManagedServer(
        home, nobody, bin_dir=Path("/nonexistent"), bind_address="127.0.0.1", timeout=10
    )
    server.chown_tree()
    for path in (home, home / "data", home / "data" / "base", home / "data" / "base" / "1"):
        assert (path.stat().st_uid, path.stat().st_gid) == nobody.owner, path
    assert theirs.stat().st_ctime_ns == before
    assert os.lstat(home / "data" / "link").st_uid == nobody.uid
    assert os.stat("/etc/passwd").st_uid == 0  # the link itself, never its target
