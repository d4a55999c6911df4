"""Recovery to a time on a real server: a base backup plus the archived WAL, replayed with
the recovery settings the restore writes, keeps exactly the rows committed at or before
the target time."""

from __future__ import annotations

import functools
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from strongroom.engines.postgresql.recovery_target import render
from support.postgresql import PlainServer, bin_dir, free_port, wait_until
from support.postgresql_service import reachable_dir

ROWS = 8


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with reachable_dir("strongroom-pitr-target-") as path:
        yield path


def server_now(conn: psycopg.Connection[tuple[datetime]]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0].astimezone(UTC).replace(tzinfo=None)


def promoted(params: dict[str, object]) -> bool:
    try:
        with psycopg.connect(**params) as c:  # type: ignore[arg-type]
            row = c.execute("SELECT pg_is_in_recovery()").fetchone()
            return row is not None and row[0] is False
    except psycopg.OperationalError:
        return False


def test_replay_stops_after_the_last_commit_at_or_before_the_target(base: Path) -> None:
    source = PlainServer(base / "source")
    source.start()
    with source.admin() as c:
        c.execute("CREATE TABLE ticks (n int PRIMARY KEY, at timestamptz NOT NULL)")
    work = base / "work"
    work.mkdir(mode=0o700)
    shutil.chown(work, "postgres", "postgres")
    backup = work / "basebackup"
    subprocess.run(
        as_postgres(
            [
                str(bin_dir() / "pg_basebackup"),
                "-h",
                str(source.home),
                "-p",
                str(source.port),
                "-U",
                "admin",
                "-D",
                str(backup),
                "-X",
                "stream",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
        env={"PGPASSWORD": source.superuser_password, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    # Each row's commit is bracketed by the server's clock: `before` is read before the
    # insert starts, `after` once its commit has returned.
    brackets: list[tuple[datetime, datetime]] = []
    with source.admin() as c:
        for n in range(1, ROWS + 1):
            before = server_now(c)
            c.execute("INSERT INTO ticks VALUES (%s, clock_timestamp())", (n,))
            brackets.append((before, server_now(c)))
            time.sleep(0.05)  # spaces the commits apart so a target can fall between two
        c.execute("SELECT pg_switch_wal()")
    source.stop()

    for keep in (1, 4, ROWS - 1):
        # Between row `keep`'s commit and the start of row keep+1.
        target = brackets[keep - 1][1] + (brackets[keep][0] - brackets[keep - 1][1]) / 2
        assert brackets[keep - 1][1] <= target <= brackets[keep][0]
        data = work / f"restore-{keep}"
        subprocess.run(as_postgres(["cp", "-a", str(backup), str(data)]), check=True)
        for segment in sorted((source.data / "pg_wal").iterdir()):
            if len(segment.name) == 24:
                subprocess.run(
                    as_postgres(["cp", str(segment), str(data / "pg_wal" / segment.name)]),
                    check=True,
                )
        port = free_port()
        conf = render(target) + f"port = {port}\nunix_socket_directories = '{work}'\n"
        for name, text in (("strongroom-recovery.conf", conf), ("recovery.signal", "")):
            (data / name).write_text(text)
            shutil.chown(data / name, "postgres", "postgres")
        with (data / "postgresql.conf").open("a") as fh:
            fh.write("include 'strongroom-recovery.conf'\n")
        log = work / f"restore-{keep}.log"
        subprocess.run(
            as_postgres(
                [
                    str(bin_dir() / "pg_ctl"),
                    "start",
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=90,
        )
        try:
            params = {
                "host": "127.0.0.1",
                "port": port,
                "user": "admin",
                "password": source.superuser_password,
                "dbname": "postgres",
                "autocommit": True,
            }

            assert wait_until(functools.partial(promoted, params), timeout=60), log.read_text()[
                -2000:
            ]
            with psycopg.connect(**params) as c:  # type: ignore[arg-type]
                present = [r[0] for r in c.execute("SELECT n FROM ticks ORDER BY n")]
            assert present == list(range(1, keep + 1))
        finally:
            subprocess.run(
                as_postgres(
                    [str(bin_dir() / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w"]
                ),
                capture_output=True,
                timeout=60,
            )
