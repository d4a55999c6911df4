"""The default of `postgresql_page_deltas` ("local"): an incremental into the local store
reads its parent's pages back and stores deltas; one into Swift stores whole pages, so
that no incremental downloads its parent chain. Both restore the same rows."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from test_stores_api import swift_store

from fixtures.service import Harness, make_harness
from fixtures.swift import SwiftServer
from strongroom.services import object_layout
from support.postgresql import pgbench_init, snapshot
from support.postgresql_service import (
    PG_MAJOR,
    WAIT,
    as_plain,
    connect,
    reachable_dir,
    tcp,
    wait_status,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]

PASSWORD = "app-" + secrets.token_hex(8)


@pytest.fixture
def h(swift_server: SwiftServer) -> Iterator[Harness]:
    with reachable_dir("strongroom-deltas-") as base:
        root = base / "service"
        root.mkdir(mode=0o711)
        harness = make_harness(
            root,
            datastores=["postgresql"],
            stores=[{"name": "local", "kind": "local"}, swift_store(swift_server)],
            default_store="local",
            default_container="c-" + uuid.uuid4().hex[:12],
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


def backup(h: Harness, instance_id: str, store: str, **extra: Any) -> dict[str, Any]:
    made = h.a.create_backup(instance_id, store, storage_driver=store, **extra)
    view: dict[str, Any] = wait_status(lambda: show(h, "backup", made["id"]), "COMPLETED")
    assert view["storage_driver"] == store
    return view


def engine_metadata(h: Harness, view: dict[str, Any]) -> dict[str, Any]:
    store = h.container.stores.backend(view["storage_driver"])
    key = object_layout.manifest_key(h.settings.default_container, view["id"])
    metadata: dict[str, Any] = json.loads(store.get(key))["engine"]
    return metadata


def restored_snapshot(h: Harness, backup_id: str) -> dict[str, tuple[int, str]]:
    made = h.a.create_instance(
        f"r-{backup_id[:8]}",
        datastore={"type": "postgresql"},
        restorePoint={"backupRef": backup_id},
    )
    view = wait_status(lambda: show(h, "instance", made["id"]), "ACTIVE")
    return snapshot(as_plain(tcp(view["connection"], "app", PASSWORD, "bench")))


def test_page_deltas_by_default_into_the_local_store_only(h: Harness) -> None:
    assert h.settings.postgresql_page_deltas == "local"
    made = h.a.create_instance(
        "src",
        datastore={"type": "postgresql"},
        databases=[{"name": "bench"}],
        users=[{"name": "app", "password": PASSWORD, "databases": [{"name": "bench"}]}],
    )
    view = wait_status(lambda: show(h, "instance", made["id"]), "ACTIVE", timeout=WAIT)
    params = tcp(view["connection"], "app", PASSWORD, "bench")
    pgbench_init(as_plain(params), 1)

    states, incrementals = {}, {}
    for store, step in (("swift", 1), ("local", 2)):
        backup(h, made["id"], store)  # a full: the last backup was in the other store
        with connect(params) as c:  # every 20th row: nearly every page changes a little
            c.execute(
                f"UPDATE pgbench_accounts SET abalance = abalance + {step} WHERE aid % 20 = {step}"
            )
        states[store] = snapshot(as_plain(params))
        incrementals[store] = backup(h, made["id"], store, incremental=1)

    local, swift = (engine_metadata(h, incrementals[s]) for s in ("local", "swift"))
    assert local["delta_pages"] > local["changed_pages"] * 0.5, local
    assert "page_format" not in swift and not swift.get("delta_pages"), swift
    assert incrementals["local"]["stored_bytes"] < incrementals["swift"]["stored_bytes"] * 0.5
    for store in ("swift", "local"):
        assert restored_snapshot(h, incrementals[store]["id"]) == states[store], store
