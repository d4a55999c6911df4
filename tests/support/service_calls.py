"""API calls the service's integration tests share, whatever the datastore: polling a view
to a status, a fault's message, ``PUT``, showing a resource, the archiver's pass, and the
archive's objects in the local store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fixtures.service import Caller, Harness, wait_for

WAIT = 120.0


def wait_status(get: Callable[[], dict[str, Any]], wanted: str, timeout: float = WAIT) -> Any:
    """Poll a view until its status is ``wanted``; fail at once on ERROR/FAILED."""

    def check() -> dict[str, Any] | None:
        view = get()
        if view["status"] in ("ERROR", "FAILED") and view["status"] != wanted:
            raise AssertionError(
                f"{view['status']}: {view.get('fault') or view.get('fail_reason')}"
            )
        return view if view["status"] == wanted else None

    return wait_for(check, timeout=timeout, interval=0.1)


def fault_message(response: Any) -> str:
    (body,) = response.json().values()
    return str(body["message"])


def put(caller: Caller, path: str, body: Any) -> Any:
    return caller.client.put(caller.url(path), json=body, headers=caller._headers(None))


def show(caller: Caller, kind: str, ident: str) -> dict[str, Any]:
    r = caller.get(f"/{kind}s/{ident}")
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()[kind]
    return view


def tick(h: Harness) -> int:
    """One pass of the point-in-time archiver; the batches it stored."""
    assert h.container.archiver is not None
    return h.container.archiver.tick()


def backup(caller: Caller, instance_id: str, name: str) -> dict[str, Any]:
    """A backup of the instance, once COMPLETED."""
    created = caller.create_backup(instance_id, name)
    return dict(wait_status(lambda: show(caller, "backup", created["id"]), "COMPLETED"))


def archive_objects(h: Harness, instance_id: str) -> list[Path]:
    root = Path(h.settings.data_dir) / "objects"
    return [p for p in root.rglob("*") if p.is_file() and f"/{instance_id}/wal/" in str(p)]


def delete_backup(h: Harness, backup_id: str) -> None:
    assert h.a.delete(f"/backups/{backup_id}").status_code == 202
    wait_for(lambda: h.a.get(f"/backups/{backup_id}").status_code == 404, timeout=60)


def check_retention(h: Harness, instance_id: str, *, oldest: str, newest: str) -> None:
    """With a window of two runs, the first beginning at backup ``oldest`` and the second
    at ``newest``: deleting ``oldest`` trims the archive to the second run; with archiving
    off, the archive stays while ``newest`` needs it and goes with it."""
    path = f"/instances/{instance_id}/pitr"
    before = show(h.a, "instance", instance_id)["restorable_window"]
    assert len(before) == 2
    objects = len(archive_objects(h, instance_id))
    delete_backup(h, oldest)
    assert tick(h) == 1
    after = show(h.a, "instance", instance_id)["restorable_window"]
    assert after == [dict(before[1], to=after[0]["to"])]
    assert len(archive_objects(h, instance_id)) < objects
    assert put(h.a, path, {"pitr": {"enabled": False}}).status_code == 200
    assert tick(h) == 0
    assert archive_objects(h, instance_id) != []  # a backup still needs it
    delete_backup(h, newest)
    assert tick(h) == 0
    assert archive_objects(h, instance_id) == []
    assert h.a.get(path).json()["restorable_window"] == []


def check_refused_in_gap(h: Harness, instance_id: str, datastore: str, when: str) -> None:
    """With a window of two runs: a restore to ``when`` (between them) is a 400 that
    names the ends of both."""
    first, second = show(h.a, "instance", instance_id)["restorable_window"]
    assert first["to"] < when < second["from"]
    point = {"instanceRef": instance_id, "restoreTime": when}
    body = {"name": "in-gap", "datastore": {"type": datastore}, "restorePoint": point}
    r = h.a.post("/instances", {"instance": body})
    assert r.status_code == 400, r.text
    message = fault_message(r)
    assert "outside the restorable window" in message
    assert first["to"] in message and second["from"] in message
