"""A managed PostgreSQL backup copied to a second store: a chunk of the original damaged
in the middle of the stream, so the first restore fails after the engine has started
laying files out, and the restore starts over from the copy, rows compared."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from fixtures.service import Harness, make_harness, wait_for
from support.postgresql_service import (
    PG_MAJOR,
    WAIT,
    connect,
    reachable_dir,
    rows,
    server_processes,
    tcp,
    wait_status,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]

PASSWORD = "app-" + secrets.token_hex(8)


@pytest.fixture
def h() -> Iterator[Harness]:
    with reachable_dir("strongroom-pgcopy-") as base:
        root = base / "service"
        root.mkdir(mode=0o711)
        harness = make_harness(
            root,
            datastores=["postgresql"],
            stores=[
                {"name": "local", "kind": "local", "root": str(root / "primary")},
                {"name": "offsite", "kind": "local", "root": str(root / "offsite")},
            ],
            default_store="local",
            chunk_size=512 * 1024,
            engine_timeout=120,
        )
        try:
            yield harness
        finally:
            harness.container.close()


def show(h: Harness, kind: str, ident: str) -> dict[str, Any]:
    r = h.a.get(f"/{kind}s/{ident}")
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()[kind]
    return view


def test_damaged_chunk_mid_restore_then_the_copy_restores_exactly(h: Harness) -> None:
    created = h.a.create_instance(
        "source",
        datastore={"type": "postgresql"},
        databases=[{"name": "shop"}],
        users=[{"name": "app", "password": PASSWORD, "databases": [{"name": "shop"}]}],
    )
    source = wait_status(lambda: show(h, "instance", created["id"]), "ACTIVE")
    params = tcp(source["connection"], "app", PASSWORD, "shop")
    with connect(params) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, body text)")
        c.execute("INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    expected = rows(params, "items", "id")
    made = h.a.create_backup(created["id"], "full")
    full = wait_status(lambda: show(h, "backup", made["id"]), "COMPLETED")
    r = h.a.post(f"/backups/{full['id']}/copy", {"copy": {"storage_driver": "offsite"}})
    assert r.status_code == 202, r.text

    def copied() -> bool:
        copies = show(h, "backup", full["id"])["copies"]
        assert not copies or copies[0]["state"] != "FAILED", copies
        return bool(copies) and copies[0]["state"] == "COMPLETED"

    wait_for(copied, timeout=WAIT)
    chunks = sorted((h.settings.data_dir.parent / "primary").rglob(f"{full['id']}/chunk-*"))
    assert len(chunks) > 4
    victim = chunks[len(chunks) * 2 // 3]
    blob = bytearray(victim.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    victim.write_bytes(bytes(blob))

    restored = h.a.create_instance(
        "restored", datastore={"type": "postgresql"}, restorePoint={"backupRef": full["id"]}
    )
    view = wait_status(lambda: show(h, "instance", restored["id"]), "ACTIVE")
    message = view["fault"]["message"]
    print(f"\nfault of the restored instance: {message}")
    assert "'offsite'" in message and "chunk" in message.lower()
    assert rows(tcp(view["connection"], "app", PASSWORD, "shop"), "items", "id") == expected
    assert server_processes(h.container.handlers.home_of(restored["id"]))
