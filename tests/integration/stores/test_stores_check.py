"""`strongroom check` with an S3 store: the default container is a valid bucket name, and
strategy containers S3 cannot hold are not listed there (they hold nothing)."""

from __future__ import annotations

from pathlib import Path

from fixtures.service import make_harness
from fixtures.swift import SwiftServer
from integration.stores.test_stores_api import s3_store, source
from strongroom.bootstrap import build_checker


def test_check_is_clean_with_an_s3_store_and_the_default_container(
    tmp_path: Path, s3_server: SwiftServer
) -> None:
    h = make_harness(tmp_path, stores=[s3_store(s3_server), {"name": "local", "kind": "local"}])
    try:
        assert h.settings.default_container == "database-backups"
        inst = source(h)
        backup = h.a.wait_backup(h.a.create_backup(inst["id"], "full")["id"])
        assert backup["storage_driver"] == "s3"
        assert backup["locationRef"].startswith("s3://database-backups/")
        # A strategy for local backups whose name no S3 bucket may have.
        r = h.a.post(
            "/backups",
            {"backup": {"name": "x", "instance": inst["id"], "swift_container": "Has_Caps"}},
        )
        assert r.status_code == 400 and "S3 bucket" in r.text
        report = build_checker(h.settings).run()
        assert report.unreachable == {}, report.unreachable
        assert report.clean, report
    finally:
        h.container.close()
