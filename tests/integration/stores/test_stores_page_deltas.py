"""The default of `postgresql_page_deltas` ("local"): an incremental whose parent chain is
all in local stores reads its parent's pages back and stores deltas; one over a parent in
Swift stores whole pages, so that no incremental downloads its parent chain. Each restores
the same rows."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from test_stores_api import swift_store

from fixtures.service import Harness
from fixtures.swift import SwiftServer
from strongroom.services import object_layout
from support.postgresql import pgbench_init, snapshot
from support.postgresql_service import (
    PG_MAJOR,
    WAIT,
    as_plain,
    connect,
    postgresql_service,
    tcp,
    wait_status,
)
from support.service_calls import show

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]

PASSWORD = "app-" + secrets.token_hex(8)


@pytest.fixture
def h(swift_server: SwiftServer) -> Iterator[Harness]:
    with postgresql_service(
        "strongroom-deltas-",
        stores=[{"name": "local", "kind": "local"}, swift_store(swift_server)],
        default_store="local",
        default_container="c-" + uuid.uuid4().hex[:12],
    ) as harness:
        yield harness


def backup(h: Harness, instance_id: str, store: str, **extra: Any) -> dict[str, Any]:
    made = h.a.create_backup(instance_id, store, storage_driver=store, **extra)
    view: dict[str, Any] = wait_status(lambda: show(h.a, "backup", made["id"]), "COMPLETED")
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
    view = wait_status(lambda: show(h.a, "instance", made["id"]), "ACTIVE")
    return snapshot(as_plain(tcp(view["connection"], "app", PASSWORD, "bench")))


def test_page_deltas_by_default_over_a_chain_in_local_stores_only(h: Harness) -> None:
    assert h.settings.postgresql_page_deltas == "local"
    made = h.a.create_instance(
        "src",
        datastore={"type": "postgresql"},
        databases=[{"name": "bench"}],
        users=[{"name": "app", "password": PASSWORD, "databases": [{"name": "bench"}]}],
    )
    view = wait_status(lambda: show(h.a, "instance", made["id"]), "ACTIVE", timeout=WAIT)
    params = tcp(view["connection"], "app", PASSWORD, "bench")
    pgbench_init(as_plain(params), 1)

    def spread_update(step: int) -> dict[str, tuple[int, str]]:
        with connect(params) as c:  # every 20th row: nearly every page changes a little
            c.execute(
                f"UPDATE pgbench_accounts SET abalance = abalance + {step} WHERE aid % 20 = {step}"
            )
        return snapshot(as_plain(params))

    backup(h, made["id"], "swift")
    spread_update(1)
    into_swift = backup(h, made["id"], "swift", incremental=1)
    over_swift_state = spread_update(2)
    # into the local store, but over a parent in Swift: reading it back is a download
    over_swift = backup(h, made["id"], "local", incremental=1)
    assert over_swift["parent_id"] == into_swift["id"]
    backup(h, made["id"], "local")
    local_state = spread_update(3)
    local = backup(h, made["id"], "local", incremental=1)

    swift_meta, over_swift_meta, local_meta = (
        engine_metadata(h, view) for view in (into_swift, over_swift, local)
    )
    assert local_meta["delta_pages"] > local_meta["changed_pages"] * 0.5, local_meta
    for whole in (swift_meta, over_swift_meta):
        assert "page_format" not in whole and not whole.get("delta_pages"), whole
    assert local["stored_bytes"] < over_swift["stored_bytes"] * 0.5
    assert restored_snapshot(h, over_swift["id"]) == over_swift_state
    assert restored_snapshot(h, local["id"]) == local_state
