"""One external registration per database: a database another project registered is
refused (403) whatever name reaches it, without saying whose it is; the same project may
register it again; once released, another project may take it."""

from __future__ import annotations

import os
import sqlite3


def register(caller, path) -> object:
    return caller.post(
        "/instances",
        {
            "instance": {
                "name": "ext",
                "datastore": {"type": "sqlite"},
                "external": {"path": str(path)},
            }
        },
    )


def test_a_database_registered_by_one_project_is_refused_to_another(harness, tmp_path):
    app = tmp_path / "external" / "app.db"
    with sqlite3.connect(app) as db:
        db.execute("create table ledger(x)")
    (tmp_path / "external" / "b").mkdir()
    hardlink = tmp_path / "external" / "b" / "mine.db"
    os.link(app, hardlink)  # another name for the same file
    symlink = tmp_path / "external" / "b" / "alias.db"
    symlink.symlink_to(app)

    first = register(harness.a, app)
    assert first.status_code == 200, first.text
    a_id = first.json()["instance"]["id"]

    for path in (app, hardlink, symlink):
        r = register(harness.b, path)
        assert r.status_code == 403, r.text
        message = r.json()["forbidden"]["message"]
        assert message == "This database is already registered by another project."
        assert harness.a.project not in r.text and a_id not in r.text
    assert harness.b.get("/instances").json()["instances"] == []

    # The same project may register it again (e.g. under another name).
    again = register(harness.a, hardlink)
    assert again.status_code == 200, again.text

    # Released by its project, the database can be registered by another.
    for iid in (a_id, again.json()["instance"]["id"]):
        assert harness.a.delete(f"/instances/{iid}").status_code == 202
    harness.wait_idle()
    taken = register(harness.b, hardlink)
    assert taken.status_code == 200, taken.text
    assert register(harness.a, app).status_code == 403


def test_an_admin_of_another_project_is_refused_too(harness, tmp_path):
    app = tmp_path / "external" / "app.db"
    with sqlite3.connect(app) as db:
        db.execute("create table t(x)")
    assert register(harness.a, app).status_code == 200
    assert register(harness.admin, app).status_code == 403
