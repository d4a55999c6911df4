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
