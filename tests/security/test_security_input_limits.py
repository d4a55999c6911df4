"""Input the service must bound: the root route's body (size and time, as every body),
retention durations and restore times past what a date can hold, and quota counts that
parallel creates or repeated deletes must not get wrong."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fakes import FailingBackend
from fixtures.clocked import ManualClock, make_clocked_harness
from fixtures.live import LiveServer, start_server
from fixtures.metadata import mariadb_database, postgresql_database
from fixtures.service import Caller, Harness, make_harness
from security.wire import assert_fault
from strongroom.domain.schedules import Duration, RetentionPolicy, ScheduleId
from strongroom.storage.errors import StorageError

LIMIT = 1024 * 1024  # Services.max_body_bytes
BODY_TIMEOUT = 2  # seconds, for the live server below
ANSWER_WITHIN = 10.0  # seconds a refusal may take to arrive


# -- the root route's body ----------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str, str]]:
    """A `strongroom serve` with a short body timeout, a member token and an instance."""
    root = tmp_path_factory.mktemp("input-limits")
    server = start_server(root / "data", env={"STRONGROOM_BODY_TIMEOUT": str(BODY_TIMEOUT)})
    try:
        token = server.token("proja")
        with socket.create_connection(_address(server), timeout=ANSWER_WITHIN) as sock:
            body = b'{"instance": {"name": "r", "flavorRef": "1", "datastore": {"type": "sqlite"}}}'
            sock.sendall(_head(token, "/instances", f"Content-Length: {len(body)}") + body)
            reply = _reply(sock)
        assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
        instance_id = reply.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
        yield server, token, instance_id
    finally:
        server.stop()


def _address(server: LiveServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def _head(token: str, path: str, framing: str) -> bytes:
    return (
        f"POST /v1.0/proja{path} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n"
    ).encode()


def _reply(sock: socket.socket) -> bytes:
    """What the server answers until it closes; b"" when it says nothing in time."""
    reply = b""
    try:
        while chunk := sock.recv(65536):
            reply += chunk
    except TimeoutError:
        pass
    return reply


def test_root_body_over_the_limit_is_413_before_the_body_ends(
    live: tuple[LiveServer, str, str],
) -> None:
    """A chunked body that passes the limit and never ends: refused once past the limit,
    not buffered while the server waits for its end."""
    server, token, instance_id = live
    piece = b"x" * 65536
    with socket.create_connection(_address(server), timeout=ANSWER_WITHIN) as sock:
        sock.sendall(_head(token, f"/instances/{instance_id}/root", "Transfer-Encoding: chunked"))
        for _ in range(LIMIT // len(piece)):
            sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        # One byte past the limit, and no last chunk: the body is still coming. (Nothing
        # more is sent: bytes the server never reads would reset the connection.)
        sock.sendall(b"1\r\nx\r\n")
        reply = _reply(sock)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300] or "no answer while the body came"
    assert b'"overLimit"' in reply and b'"code":413' in reply, reply[-300:]


def test_root_body_sent_too_slowly_is_408(live: tuple[LiveServer, str, str]) -> None:
    server, token, instance_id = live
    with socket.create_connection(_address(server), timeout=ANSWER_WITHIN) as sock:
        started = time.monotonic()
        path = f"/instances/{instance_id}/root"
        sock.sendall(_head(token, path, "Content-Length: 100") + b'{"password": ')
        reply = _reply(sock)  # the other 87 bytes never come
    assert reply.startswith(b"HTTP/1.1 408"), reply[:300] or "no answer to a stalled body"
    assert time.monotonic() - started < BODY_TIMEOUT + 5


def test_root_body_over_the_limit_is_a_413_fault_and_no_body_is_no_password(
    harness: Harness,
) -> None:
    inst = harness.a.create_instance("lite")
    path = f"/instances/{inst['id']}/root"
    fault = assert_fault(harness.a.post(path, {"password": "p" * (LIMIT + 1)}), 413)
    assert "larger than" in fault["overLimit"]["message"]
    assert_fault(harness.a.post(path, None), 501)  # no body: on to the datastore
    assert_fault(harness.a.post(path, {}), 501)
    assert_fault(harness.a.post(path, {"password": "chosen"}), 501)
    for raw in (b"null", b"[]", b"{"):
        r = harness.a.post(path, content=raw, headers={"Content-Type": "application/json"})
        assert_fault(r, 400)


# -- retention durations ----------------------------------------------------------------------


START = datetime(2031, 3, 2, 0, 0, 0)


@pytest.fixture
def clocked(tmp_path: Path) -> Iterator[Harness]:
    h = make_clocked_harness(tmp_path, ManualClock(START))
    try:
        yield h
    finally:
        h.container.close()


def _schedule_body(instance_id: str, retention: dict[str, Any]) -> dict[str, Any]:
    spec = {"instance_id": instance_id, "name": "n", "cron": "0 3 * * *", "retention": retention}
    return {"backup_schedule": spec}


def _put(caller: Caller, path: str, body: Any) -> Any:
    return caller.client.put(caller.url(path), json=body, headers=caller._headers(None))


@pytest.mark.parametrize("within", ["5000y", "999999d", "1001y", "12013m", "999999y999999y"])
def test_a_keep_within_no_date_can_reach_is_400(clocked: Harness, within: str) -> None:
    h = clocked
    inst = h.a.wait_instance(h.a.create_instance("db")["id"])["id"]
    body = _schedule_body(inst, {"keep_within": within})
    fault = assert_fault(h.a.post("/backup_schedules", body), 400)
    assert "keep_within" in fault["badRequest"]["message"], fault
    assert h.a.get("/backup_schedules").json() == {"backup_schedules": []}
    made = h.a.post("/backup_schedules", _schedule_body(inst, {"keep_within": "1000y"}))
    assert made.status_code == 200, made.text
    path = f"/backup_schedules/{made.json()['backup_schedule']['id']}"
    assert_fault(_put(h.a, path, body), 400)
    assert h.a.get(path).json()["backup_schedule"]["retention"] == {"keep_within": "1000y"}


def test_a_keep_within_of_parts_is_stored_summed_and_read_back(clocked: Harness) -> None:
    h = clocked
    inst = h.a.wait_instance(h.a.create_instance("db")["id"])["id"]
    body = _schedule_body(inst, {"keep_within": "999999h999999h"})  # 228 years
    made = h.a.post("/backup_schedules", body)
    assert made.status_code == 200, made.text
    listed = h.a.get("/backup_schedules")
    assert listed.status_code == 200, listed.text
    schedules = listed.json()["backup_schedules"]
    assert [s["retention"] for s in schedules] == [{"keep_within": "1999998h"}]


def test_a_stored_keep_within_no_date_can_reach_keeps_everything(clocked: Harness) -> None:
    """A schedule stored with such a duration (before it was refused) still prunes."""
    h = clocked
    inst = h.a.wait_instance(h.a.create_instance("db")["id"])["id"]
    made = h.a.post("/backup_schedules", _schedule_body(inst, {"keep_last": 1}))
    schedule_id = made.json()["backup_schedule"]["id"]
    backups = []
    for _ in range(2):
        run = h.a.post(f"/backup_schedules/{schedule_id}/run")
        assert run.status_code == 202, run.text
        backups.append(h.a.wait_backup(run.json()["backup"]["id"])["id"])
    for within in (Duration(years=5000), Duration(days=999_999)):
        with h.container.uow(write=True) as uow:
            stored = uow.schedules.find(ScheduleId(schedule_id))
            assert stored is not None
            uow.schedules.replace(replace(stored, retention=RetentionPolicy(keep_within=within)))
            uow.commit()
        for query in ("?dry_run=true", ""):
            r = h.a.post(f"/backup_schedules/{schedule_id}/prune{query}")
            assert r.status_code == 200, r.text
            prune = r.json()["prune"]
            assert prune["delete"] == []
            assert sorted(d["id"] for d in prune["keep"]) == sorted(backups)
            assert all(d["reasons"] == [f"within {within}"] for d in prune["keep"]), prune


# -- restore times ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:30:00+00:31"]
)
def test_a_restore_time_outside_the_years_a_date_holds_is_400(harness: Harness, when: str) -> None:
    inst = harness.a.create_instance("src")
    body = {
        "instance": {
            "name": "r",
            "datastore": {"type": "sqlite"},
            "restorePoint": {"instanceRef": inst["id"], "restoreTime": when},
        }
    }
    fault = assert_fault(harness.a.post("/instances", body), 400)
    assert "restoreTime" in fault["badRequest"]["message"], fault


# -- the instance quota under parallel creates -------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def metadata(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    with contextlib.ExitStack() as stack:
        url = None
        if request.param == "postgresql":
            url = stack.enter_context(postgresql_database("strongroom_quota_"))
        elif request.param == "mariadb":
            url = stack.enter_context(mariadb_database("strongroom_quota_"))
        h = make_harness(tmp_path, database_url=url, max_instances=3)
        stack.callback(h.container.close)
        yield h


PARALLEL = 4  # the per-project share of request threads (api.blocking)
ROUNDS = 5  # a race is lost by chance: each round in a project of its own


def _create_at_once(caller: Caller) -> list[int]:
    """The statuses of PARALLEL instance creates sent at the same moment."""
    ready = threading.Barrier(PARALLEL)
    answers: list[int] = []

    def create(n: int) -> None:
        body = {"instance": {"name": f"p{n}", "datastore": {"type": "sqlite"}}}
        ready.wait()
        answers.append(caller.post("/instances", body).status_code)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(PARALLEL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(answers)


def test_parallel_creates_stay_within_the_instance_quota(metadata: Harness) -> None:
    h = metadata
    for round_ in range(ROUNDS):
        project = f"race{round_}"
        caller = Caller(h.client, project, h.token(project))
        # One first, alone: it makes the project's usage row, which parallel first creates
        # would make at once (and on MariaDB deadlock doing so: lock_in_use).
        caller.create_instance("first")
        answers = _create_at_once(caller)
        assert answers == [200, 200] + [413] * (PARALLEL - 2), (project, answers)
        h.wait_idle()
        assert len(caller.get("/instances").json()["instances"]) == 3
        assert caller.get("/limits").json()["limits"][0]["instances_in_use"] == 3


def test_parallel_first_creates_of_a_new_project_stay_within_the_instance_quota(
    metadata: Harness,
) -> None:
    # Nothing made first: the creates also race to make the project's usage row, which on
    # MariaDB must not deadlock (a 500).
    h = metadata
    for round_ in range(ROUNDS):
        project = f"fresh{round_}"
        caller = Caller(h.client, project, h.token(project))
        answers = _create_at_once(caller)
        assert answers == [200] * 3 + [413] * (PARALLEL - 3), (project, answers)
        h.wait_idle()
        assert len(caller.get("/instances").json()["instances"]) == 3
        assert caller.get("/limits").json()["limits"][0]["instances_in_use"] == 3


# -- backup quota given back on delete ---------------------------------------------------------


def _backups_in_use(caller: Caller) -> int:
    used: int = caller.get("/limits").json()["limits"][0]["backups_in_use"]
    return used


def test_an_admin_deleting_a_backup_gives_its_project_the_quota_back(harness: Harness) -> None:
    h = harness
    mine = h.a.wait_instance(h.a.create_instance("a")["id"])["id"]
    theirs = h.admin.wait_instance(h.admin.create_instance("admin")["id"])["id"]
    backup = h.a.wait_backup(h.a.create_backup(mine)["id"])["id"]
    h.admin.wait_backup(h.admin.create_backup(theirs)["id"])
    assert (_backups_in_use(h.a), _backups_in_use(h.admin)) == (1, 1)
    assert h.admin.delete(f"/backups/{backup}").status_code == 202
    h.wait_idle()
    assert h.a.get(f"/backups/{backup}").status_code == 404
    assert (_backups_in_use(h.a), _backups_in_use(h.admin)) == (0, 1)


class RefusingDeletes(FailingBackend):
    """The store, refusing to delete while ``refuse`` is set."""

    refuse = False

    def delete(self, key: str) -> None:
        if self.refuse:
            raise StorageError(f"refused to delete {key}")
        super().delete(key)


def test_deleting_a_backup_whose_delete_failed_gives_its_quota_back_once(tmp_path: Path) -> None:
    stores: dict[str, RefusingDeletes] = {}

    def wrap(name: str, backend: Any) -> RefusingDeletes:
        stores[name] = RefusingDeletes(backend)
        return stores[name]

    h = make_harness(tmp_path, wrap_store=wrap)
    try:
        inst = h.a.wait_instance(h.a.create_instance("a")["id"])["id"]
        kept = h.a.wait_backup(h.a.create_backup(inst, "kept")["id"])["id"]
        doomed = h.a.wait_backup(h.a.create_backup(inst, "doomed")["id"])["id"]
        assert _backups_in_use(h.a) == 2
        stores["local"].refuse = True
        for _ in range(2):  # the delete fails, and fails again
            assert h.a.delete(f"/backups/{doomed}").status_code == 202
            h.a.wait_backup(doomed, ("DELETE_FAILED",))
            h.wait_idle()
            assert _backups_in_use(h.a) == 1  # the kept backup still counts
        stores["local"].refuse = False
        assert h.a.delete(f"/backups/{doomed}").status_code == 202
        h.wait_idle()
        assert h.a.get(f"/backups/{doomed}").status_code == 404
        assert h.a.get(f"/backups/{kept}").status_code == 200
        assert _backups_in_use(h.a) == 1
    finally:
        h.container.close()
