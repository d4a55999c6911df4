"""Option files, credentials files, SQL quoting and request checks (no server)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from strongroom.engines import process
from strongroom.engines.errors import ExternalNotAllowedError, InvalidExternalError
from strongroom.engines.identity import InstanceIdentity
from strongroom.engines.mariadb import config, engine, restore, server, tools


def test_option_values_are_quoted() -> None:
    assert config.option_value('pa"ss\\word') == '"pa\\"ss\\\\word"'
    assert config.option_value(3306) == '"3306"'
    with pytest.raises(ValueError):
        config.option_value("line\nbreak")


def test_render_groups() -> None:
    text = config.render({"client": {"user": "u", "password": "p w"}, "mariadbd": {"flag": None}})
    assert text.splitlines() == [
        "[client]",
        'user = "u"',
        'password = "p w"',
        "",
        "[mariadbd]",
        "flag",
    ]
    assert text.endswith("\n")


def test_private_credentials_file_is_removed() -> None:
    managed = {"managed": True, "socket": "/x/mysqld.sock", "host": "127.0.0.1", "port": 1}
    with config.private_dir() as directory:
        path = directory / "client.cnf"
        config.write_private(
            path, config.render({"client": config.client_options(managed, "backup", "s3cret")})
        )
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        text = path.read_text()
        assert 'password = "s3cret"' in text and 'socket = "/x/mysqld.sock"' in text
        assert "host" not in text
    assert not directory.exists()
    external = {"managed": False, "host": "127.0.0.1", "port": 3307}
    options = config.client_options(external, "u", "p")
    assert options == {
        "user": "u",
        "password": "p",
        "host": "127.0.0.1",
        "port": "3307",
        "protocol": "TCP",
    }


def test_write_private(tmp_path: Path) -> None:
    path = tmp_path / "f"
    config.write_private(path, "secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        config.write_private(path, "again")


def test_identifiers_and_sql_strings() -> None:
    assert config.quote_identifier("my`db") == "`my``db`"
    for bad in ("", "a" * 65, "../etc", "a/b", " x", "nul\0"):
        with pytest.raises(ValueError):
            config.quote_identifier(bad)
    assert config.sql_string("it's \\ fine") == "'it\\'s \\\\ fine'"
    with pytest.raises(ValueError):
        config.sql_string("a\nb")


def test_failure_reason_keeps_error_lines() -> None:
    stderr = "\n".join([f"[00] Streaming ./db/t{i}.ibd" for i in range(30)])
    stderr += "\n[00] FATAL ERROR: failed to execute query BACKUP LOCK: Server has gone away"
    exc = process.ProcessError("mariadb-backup", "exited with status 1", stderr)
    reason = tools.failure_reason(exc)
    assert reason.startswith("mariadb-backup exited with status 1: ")
    assert "Server has gone away" in reason and "Streaming" not in reason
    quiet = process.ProcessError("mbstream", "exited with status 1", "just\nthis")
    assert tools.failure_reason(quiet) == "mbstream exited with status 1: just\nthis"
    # A tool run as the instance's OS user is named, not runuser.
    wrapped = process.ProcessError("runuser", "exited with status 1", "x: error")
    assert tools.failure_reason(wrapped, "/usr/bin/mbstream").startswith("mbstream exited")


def test_server_config_round_trip(tmp_path: Path) -> None:
    layout = server.Layout(tmp_path)
    server.write_config(
        layout,
        port=4406,
        bind_address="127.0.0.1",
        identity=InstanceIdentity.current(),
        extra={"innodb_page_size": "32768"},
    )
    options = server.read_config(layout)
    assert options["port"] == "4406"
    assert options["datadir"] == str(tmp_path / "data")
    assert options["innodb_page_size"] == "32768"
    assert "log-bin" in options and options["server-id"] == "1"
    assert "user" not in options
    # SQL reads and writes files in the instance's own directory only.
    assert options["secure_file_priv"] == str(tmp_path / "files")


def test_server_options_are_set_in_place_and_added(tmp_path: Path) -> None:
    layout = server.Layout(tmp_path)
    layout.config.write_text(
        "# an instance made before OS users of its own\n[mariadbd]\nuser = mysql\n"
        'innodb-buffer-pool-size = "1G"\n\n[client]\nport = "3307"\n'
    )
    server.set_server_options(layout, {"user": "sr-0123456789ab", "secure_file_priv": "/h/f"})
    text = layout.config.read_text()
    options = server.read_config(layout)
    assert options["user"] == "sr-0123456789ab"
    assert options["secure_file_priv"] == "/h/f"
    assert options["innodb-buffer-pool-size"] == "1G"
    assert "mysql" not in text and text.count("[client]") == 1
    assert text.index("secure_file_priv") < text.index("[client]")
    with pytest.raises(ValueError):
        server.set_server_options(layout, {"user": "x\n[client]"})


def test_carried_options(tmp_path: Path) -> None:
    (tmp_path / "backup-my.cnf").write_text(
        "[mysqld]\ninnodb_page_size=16384\ninnodb_data_file_path=ibdata1:12M:autoextend\n"
        "innodb_undo_tablespaces=0\ninnodb_log_file_size=33554432\n"
    )
    assert restore.carried_options(tmp_path) == {
        "innodb_data_file_path": "ibdata1:12M:autoextend",
        "innodb_undo_tablespaces": "0",
    }


def test_external_registration_is_refused_without_allow_lists(tmp_path: Path) -> None:
    eng = engine.MariaDbEngine()
    if eng.detect() is None:
        pytest.skip("MariaDB is not installed")
    params = {"host": "127.0.0.1", "port": 3306, "user": "u", "password": "p", "datadir": "/d"}
    with pytest.raises(ExternalNotAllowedError, match="not enabled"):
        eng.register_external(params, project_id="p1")
    allowed = engine.MariaDbEngine(allowed_hosts=["127.0.0.1"], allowed_datadirs=[tmp_path])
    with pytest.raises(ExternalNotAllowedError, match="data directory"):
        allowed.register_external(
            {**params, "datadir": str(tmp_path / ".." / "x")}, project_id="p1"
        )
    with pytest.raises(InvalidExternalError, match="absolute"):
        allowed.register_external({**params, "datadir": "relative"}, project_id="p1")
    with pytest.raises(InvalidExternalError, match="port"):
        allowed.register_external({**params, "port": 70000}, project_id="p1")


def test_public_view_has_no_secrets() -> None:
    eng = engine.MariaDbEngine()
    conn = {
        "host": "127.0.0.1",
        "port": 1234,
        "admin_user": "strongroom_admin",
        "admin_password": "A",
        "backup_user": "strongroom_backup",
        "backup_password": "B",
        "managed": True,
        "users": [{"name": "bob", "host": "%", "databases": ["app"]}],
    }
    view = eng.public_view(conn)
    assert view == {
        "host": "127.0.0.1",
        "port": 1234,
        "users": [{"name": "bob", "host": "%", "databases": ["app"]}],
    }
    external = {"host": "h", "port": 1, "user": "u", "password": "P", "managed": False}
    assert eng.public_view(external) == {"host": "h", "port": 1, "users": [{"name": "u"}]}


def test_set_port_keeps_other_options(tmp_path: Path) -> None:
    layout = server.Layout(tmp_path)
    server.write_config(
        layout, port=4406, bind_address="127.0.0.1", identity=InstanceIdentity.current()
    )
    with layout.config.open("a") as handle:
        handle.write('[mariadbd]\ninnodb_buffer_pool_size = "1G"\n')
    server.set_port(layout, 5507)
    text = layout.config.read_text()
    assert 'port = "5507"' in text and "4406" not in text
    assert server.read_config(layout)["innodb_buffer_pool_size"] == "1G"
