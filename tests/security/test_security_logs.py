"""The log of a live server: each line about a backup or an instance names it and its
project; completion, failure and restore are logged; one access line per request, with
no token and no line break a client could inject."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from security.wire import Site, external_sqlite, live_site, wait_for


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, str]]:
    with live_site(tmp_path_factory.mktemp("logs")) as site:
        a = site.a
        instance = a.create_instance("src")
        a.wait_instance(instance["id"])
        full = a.wait_backup(a.create_backup(instance["id"], "full")["id"])
        restored = a.create_instance("copy", restorePoint={"backupRef": full["id"]})
        a.wait_instance(restored["id"])
        db = external_sqlite(site.root / "external", "gone.db")
        body = {
            "instance": {
                "name": "ext",
                "datastore": {"type": "sqlite"},
                "external": {"path": str(db)},
            }
        }
        external = a.post("/instances", body).json()["instance"]
        db.unlink()
        failing = a.create_backup(external["id"], "doomed")
        wait_for(lambda: a.get(f"/backups/{failing['id']}").json()["backup"]["status"] == "FAILED")
        site.b.get("/backups?limit=1&token=abc")
        site.b.get("/backups%0a2026-01-01 INFO forged")
        site.data.update(
            ids={"instance": instance, "full": full, "restored": restored, "failing": failing}
        )
        site.server.stop()
        yield site, site.server.log_path.read_text()


def lines_with(text: str, *parts: str) -> list[str]:
    return [line for line in text.splitlines() if all(p in line for p in parts)]


def test_completion_names_the_backup_its_instance_and_project(log: tuple[Site, str]) -> None:
    site, text = log
    ids = site.data["ids"]
    assert lines_with(
        text,
        "backup completed",
        f"backup_id={ids['full']['id']}",
        f"instance_id={ids['instance']['id']}",
        "project_id=proja",
    )


def test_a_failure_is_logged_with_its_reason_and_ids(log: tuple[Site, str]) -> None:
    site, text = log
    failed = lines_with(text, "backup FAILED", f"backup_id={site.data['ids']['failing']['id']}")
    assert failed and "project_id=proja" in failed[0]


def test_a_restore_is_logged_with_the_instance_and_the_backup(log: tuple[Site, str]) -> None:
    site, text = log
    ids = site.data["ids"]
    assert lines_with(
        text,
        "restored",
        f"instance_id={ids['restored']['id']}",
        f"backup_id={ids['full']['id']}",
        "project_id=proja",
    )


def test_one_access_line_per_request_without_tokens_or_injected_lines(
    log: tuple[Site, str],
) -> None:
    site, text = log
    assert lines_with(text, "strongroom.access", '"GET /v1.0/projb/backups?limit=1&token=***" 200')
    for token in (site.a.token, site.b.token, site.admin.token):
        assert token not in text
    assert not [line for line in text.splitlines() if line.startswith("2026-01-01 INFO forged")]
    assert lines_with(text, "/v1.0/projb/backups\\x0a2026-01-01 INFO forged")
    assert " INFO alembic" not in text
