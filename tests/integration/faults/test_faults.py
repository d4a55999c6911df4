"""Broken parts: a store failing mid-backup or returning corrupted bytes, tools that fail or
hang, and the service stopping with work queued. After each: no backup is left running,
every failure has a reason, completed backups still restore, and no orphaned objects."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from fakes import FailingBackend
from fixtures.service import make_harness
from strongroom.bootstrap import build_checker
from strongroom.engines.process import ProcessError, run, stream_out
from strongroom.services.consistency import ConsistencyChecker

QUERY = "select id, body from t order by id"


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


@pytest.fixture
def faulty(tmp_path):
    stores: dict[str, FailingBackend] = {}

    def wrap(name, backend):
        stores[name] = FailingBackend(backend)
        return stores[name]

    h = make_harness(tmp_path, wrap_store=wrap, chunk_size=64 * 1024)
    try:
        yield h, stores["local"]
    finally:
        h.container.close()


def source(h, rows=3000):
    inst = h.a.wait_instance(h.a.create_instance("src")["id"])
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("create table t(id integer primary key, body text)")
        db.executemany("insert into t values (?, ?)", [(i, f"{i:08d}" * 16) for i in range(rows)])
        expected = db.execute(QUERY).fetchall()
    return inst, expected


def restored_rows(h, backup_id):
    r = h.a.post(
        "/instances", {"instance": {"name": "r", "restorePoint": {"backupRef": backup_id}}}
    )
    inst = h.a.wait_instance(r.json()["instance"]["id"])
    with sqlite3.connect(inst["connection"]["path"]) as db:
        return db.execute(QUERY).fetchall()


def consistency(h) -> ConsistencyChecker:
    return build_checker(h.settings)


def test_store_failing_on_the_nth_write(faulty):
    h, store = faulty
    inst, expected = source(h)
    good = h.a.wait_backup(h.a.create_backup(inst["id"], "good")["id"])
    store.fail_puts_from = store.puts + 3
    bad = h.a.wait_backup(h.a.create_backup(inst["id"], "bad")["id"], ("FAILED",))
    assert "injected write failure" in bad["fail_reason"]
    store.fail_puts_from = None
    report = consistency(h).run()
    assert report.clean, report
    assert not list((h.settings.data_dir / "objects" / "database-backups" / bad["id"]).glob("*"))
    assert restored_rows(h, good["id"]) == expected
    assert all(
        b["status"] not in ("NEW", "BUILDING") for b in h.a.get("/backups").json()["backups"]
    )


def test_store_returning_corrupted_bytes_is_refused_then_restore_works(faulty):
    h, store = faulty
    inst, expected = source(h)
    backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
    store.corrupt_gets = True
    r = h.a.post(
        "/instances", {"instance": {"name": "r", "restorePoint": {"backupRef": backup["id"]}}}
    )
    failed = h.a.wait_instance(r.json()["instance"]["id"], "ERROR")
    assert failed["fault"]["message"]
    store.corrupt_gets = False
    assert restored_rows(h, backup["id"]) == expected


def test_work_queued_at_shutdown_runs_after_restart(tmp_path):
    h = make_harness(tmp_path)
    inst, _ = source(h)
    done = h.a.wait_backup(h.a.create_backup(inst["id"], "done")["id"])
    h.container.queue.hold()
    pending = h.a.create_backup(inst["id"], "pending")
    assert h.a.delete(f"/backups/{done['id']}").status_code == 202
    h.container.close()  # queued jobs stay QUEUED in the metadata database
    again = make_harness(tmp_path)
    try:
        finished = again.a.wait_backup(pending["id"])
        assert finished["status"] == "COMPLETED"
        again.wait_idle()
        assert again.a.get(f"/backups/{done['id']}").status_code == 404
        assert not (again.settings.data_dir / "objects" / "database-backups" / done["id"]).exists()
        assert consistency(again).run().clean
    finally:
        again.container.close()


def test_tool_exiting_non_zero_halfway_reports_its_stderr():
    sink = Sink()
    script = (
        "import sys; sys.stdout.write('x' * 100000); sys.stdout.flush(); "
        "sys.stderr.write('disk on fire\\n'); sys.exit(3)"
    )
    with pytest.raises(ProcessError) as caught:
        stream_out([sys.executable, "-c", script], sink)
    assert "exited with status 3" in str(caught.value)
    assert "disk on fire" in str(caught.value)
    assert len(sink.data) == 100000


def test_hanging_tool_is_killed_at_its_timeout():
    with pytest.raises(ProcessError, match="did not finish within 1 s"):
        stream_out([sys.executable, "-c", "import time; time.sleep(60)"], Sink(), timeout=1)
    with pytest.raises(ProcessError, match="did not finish within 1 s"):
        run([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1)


def test_missing_tool_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ProcessError, match="is not installed"):
        run([str(tmp_path / "no-such-tool")])
