"""What a new user sees from the `strongroom` command: help for every option, a version,
one line (no traceback) for a bad setting or a busy port, no library chatter, and a
refusal at start when managed servers could not reach the data dir."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.live import start_server
from strongroom.cli import parser

REPO = Path(__file__).resolve().parents[3]


def strongroom(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "strongroom", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def _parsers(top: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(top.prog, top)]
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _parsers(child)
    return found


def test_every_option_and_argument_has_help() -> None:
    missing = [
        f"{prog} {action.dest}"
        for prog, p in _parsers(parser())
        for action in p._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


def test_help_and_version() -> None:
    shown = strongroom("--help")
    assert shown.returncode == 0
    assert "Thin" not in shown.stdout and "bootstrap" not in shown.stdout
    assert "Trove" in shown.stdout
    version = strongroom("--version")
    assert version.returncode == 0 and version.stdout.startswith("strongroom ")


def test_commands_print_no_migration_chatter(tmp_path: Path) -> None:
    made = strongroom("token", "create", "--data-dir", str(tmp_path / "d"), "--project-id", "p")
    assert made.returncode == 0, made.stderr
    assert len(made.stdout.strip().splitlines()) == 1
    assert "alembic" not in made.stderr and " INFO " not in made.stderr, made.stderr


@pytest.mark.parametrize(
    ("env", "toml", "setting"),
    [
        ({"STRONGROOM_PORT": "eighty"}, "", "port"),
        ({}, 'backup_quota = "many"\n', "backup_quota"),
        ({}, '[[stores]]\nname = "s"\nkind = "ftp"\n', "stores.0.kind"),
        ({}, 'default_store = "nowhere"\n', "default_store"),
        ({}, "port = \n", "config file"),
    ],
    ids=["env", "toml", "nested", "model", "syntax"],
)
def test_a_configuration_error_is_one_line_naming_the_setting(
    tmp_path: Path, env: dict[str, str], toml: str, setting: str
) -> None:
    config = tmp_path / "strongroom.toml"
    config.write_text(toml)
    args = ["--data-dir", str(tmp_path / "d"), "--config", str(config)]
    done = strongroom("token", "list", *args, env=env)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("strongroom: ") and setting in lines[0], lines[0]
    assert "Traceback" not in done.stderr


def test_a_busy_port_is_reported_alone(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = strongroom(
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "d"),
            env={"STRONGROOM_DATASTORES": '["sqlite"]'},
        )
    assert done.returncode == 1
    assert "serving" not in done.stdout.lower()
    assert done.stderr.strip() == f"strongroom: port {port} on 127.0.0.1 is already in use"
    assert not (tmp_path / "d").exists()  # refused before anything was made


@pytest.mark.skipif(os.geteuid() != 0, reason="the check applies when running as root")
def test_as_root_a_closed_parent_of_the_data_dir_is_one_warning_line(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STRONGROOM_DATASTORES", '["sqlite","postgresql"]')
        server = start_server(closed / "data")
    try:
        warned = [
            line
            for line in server.log_path.read_text().splitlines()
            if f"chmod o+x {closed}" in line
        ]
    finally:
        server.stop()
    assert len(warned) == 1 and " WARNING " in warned[0], server.log_path.read_text()[-2000:]


def test_db_upgrade_makes_a_fresh_data_dir(tmp_path: Path) -> None:
    done = strongroom("db", "upgrade", "--data-dir", str(tmp_path / "fresh"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "fresh" / "strongroom.db").is_file()


def test_an_unreachable_metadata_database_is_one_line_naming_database_url(
    tmp_path: Path,
) -> None:
    done = strongroom(
        "token",
        "list",
        "--data-dir",
        str(tmp_path / "d"),
        env={"STRONGROOM_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"},
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "database_url" in lines[0], done.stderr


def test_api_without_a_broker_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    done = strongroom("api", "--workers", "2", "--port", "0", "--data-dir", str(tmp_path / "d"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "strongroom: cannot start: scaled-out roles need broker_url "
        "(e.g. amqp://user:pw@host:5672/vhost)"
    ]
    assert "serving" not in done.stdout.lower()
    assert not (tmp_path / "d" / "admin-token").exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_api_processes_that_cannot_start_stop_the_command(tmp_path: Path, workers: str) -> None:
    """A setting only the API processes check (the default container against each store)
    stops the command with one line and exit code 2, instead of restarting the processes
    (the first to fail stops the others, which may not have printed theirs yet)."""
    data_dir = tmp_path / "d"
    assert strongroom("db", "upgrade", "--data-dir", str(data_dir)).returncode == 0
    done = strongroom(
        "api",
        "--workers",
        workers,
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        env={
            "STRONGROOM_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
            "STRONGROOM_DEFAULT_CONTAINER": "../x",
        },
    )
    assert done.returncode == 2, done.stderr[-2000:]
    refused = [line for line in done.stderr.splitlines() if "cannot start" in line]
    assert 1 <= len(refused) <= int(workers), done.stderr
    assert all("default_container" in line for line in refused)
    assert "Traceback" not in done.stderr
    assert "died; starting another" not in done.stderr


@pytest.mark.parametrize("command", [["serve"], ["api", "--workers", "2"]])
def test_a_master_key_file_without_a_key_is_one_line(tmp_path: Path, command: list[str]) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    (data_dir / "master.key").write_text("not a key\n")
    (data_dir / "master.key").chmod(0o600)
    done = strongroom(
        *command,
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        env={
            "STRONGROOM_DATASTORES": '["sqlite"]',
            "STRONGROOM_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
        }
        if command[0] == "api"
        else {"STRONGROOM_DATASTORES": '["sqlite"]'},
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        f"strongroom: cannot start: master key file {data_dir / 'master.key'}: "
        "master key is not valid base64 (setting master_key_file)"
    ]
    assert "serving" not in done.stdout.lower()
