"""A backup running when the service is killed ends FAILED with a reason on the next start,
and its partial objects are removed."""

import signal
import sqlite3
import time

import httpx

from fixtures.live import start_server
from fixtures.service import wait_for


def test_backup_interrupted_by_sigkill_fails_on_restart(tmp_path):
    roots = tmp_path / "roots"
    roots.mkdir()
    db_path = roots / "locked.db"
    with sqlite3.connect(db_path) as db:
        db.execute("pragma journal_mode=delete")
        db.execute("create table t(x)")
        db.executemany("insert into t values (?)", [(i,) for i in range(1000)])
    data = tmp_path / "data"
    server = start_server(data, "--sqlite-root", str(roots))
    project = "restart"
    headers = {"X-Auth-Token": server.token(project)}
    api = server.endpoint(project)
    inst = httpx.post(
        f"{api}/instances",
        json={
            "instance": {
                "name": "ext",
                "datastore": {"type": "sqlite"},
                "external": {"path": str(db_path)},
            }
        },
        headers=headers,
    ).json()["instance"]
    # Another process holds an exclusive lock, so the backup waits inside the engine.
    locker = sqlite3.connect(db_path, isolation_level=None)
    locker.execute("begin exclusive")
    backup = httpx.post(
        f"{api}/backups",
        json={"backup": {"name": "doomed", "instance": inst["id"]}},
        headers=headers,
    ).json()["backup"]
    wait_for(
        lambda: (
            httpx.get(f"{api}/backups/{backup['id']}", headers=headers).json()["backup"]["status"]
            == "BUILDING"
        )
    )
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    locker.execute("rollback")
    locker.close()

    started = time.monotonic()
    server = start_server(data, "--sqlite-root", str(roots))
    try:
        api2 = server.endpoint(project)
        shown = httpx.get(f"{api2}/backups/{backup['id']}", headers=headers).json()["backup"]
        assert shown["status"] == "FAILED"
        assert "stopped while the backup was running" in shown["fail_reason"]
        assert time.monotonic() - started < 60
        leftovers = list((data / "objects").rglob(f"*{backup['id']}*"))
        assert leftovers == []
        # The instance still backs up fine afterwards.
        again = httpx.post(
            f"{api2}/backups",
            json={"backup": {"name": "again", "instance": inst["id"]}},
            headers=headers,
        ).json()["backup"]
        done = wait_for(
            lambda: (
                (b := httpx.get(f"{api2}/backups/{again['id']}", headers=headers).json()["backup"])[
                    "status"
                ]
                in ("COMPLETED", "FAILED")
                and b
            )
        )
        assert done["status"] == "COMPLETED", done.get("fail_reason")
    finally:
        server.stop()
