"""`strongroom serve --workers 2`: two API processes answer on one port; the jobs their
requests make run in the serving process, and the scheduler runs there only, once."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from fixtures.live import LiveServer, start_server

PROJECT = "workers"


def _wait(what: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = what()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is ``pid``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append((int(stat.parent.name), cmdline))
    return found


def _all_threads_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped: a signal is delivered after ``kill``
    returns, and a thread may run meanwhile."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in ("T", "t") for state in states)


def _api_processes(server: LiveServer) -> list[int]:
    def two() -> list[int]:
        found = [pid for pid, cmd in _children(server.process.pid) if "spawn_main" in cmd]
        return found if len(found) == 2 else []

    result: list[int] = _wait(two)
    return result


def _stopped(pids: list[int]) -> contextlib.AbstractContextManager[None]:
    """Every process in ``pids`` stopped (SIGSTOP) for the block. Keep the block short: the
    supervisor replaces a process that does not answer its health check within 5 s."""

    @contextlib.contextmanager
    def stopped() -> Iterator[None]:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    return stopped()


def _client_of_a_running_process(server: LiveServer, **kwargs: Any) -> httpx.Client:
    """A client whose keep-alive connection was accepted by a running API process.

    Each process has its own listener and the kernel picks one per new connection, so a
    connection may wait on a stopped process's listener: a short probe tells, and a new
    connection (another source port) is tried until one is answered."""
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        client = httpx.Client(base_url=server.url, **kwargs)
        try:
            if client.get("/", timeout=0.3).status_code == 200:
                return client
        except httpx.TransportError:
            pass
        client.close()
    raise AssertionError("no running API process answered")


def _answers_alone(server: LiveServer, others: list[int]) -> bool:
    """A request while every other API process is stopped: only the one left running can
    answer it."""
    with _stopped(others), contextlib.closing(_client_of_a_running_process(server)) as client:
        return client.get("/").status_code == 200


def _get(url: str) -> httpx.Response:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return httpx.Response(599)


def _active(api: httpx.Client, instance_id: str) -> dict[str, Any] | None:
    view: dict[str, Any] = api.get(f"/instances/{instance_id}").json()["instance"]
    assert view["status"] != "ERROR", view
    return view if view["status"] == "ACTIVE" else None


def _instance(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """Create an instance and wait until it is ACTIVE."""
    created = api.post("/instances", json={"instance": body})
    assert created.status_code == 200, created.text
    view: dict[str, Any] = _wait(lambda: _active(api, created.json()["instance"]["id"]))
    return view


def _sqlite_source(api: httpx.Client, rows: int) -> dict[str, Any]:
    """A managed SQLite instance holding ``rows`` rows in table t."""
    source = _instance(api, {"name": "app", "datastore": {"type": "sqlite"}})
    with sqlite3.connect(source["connection"]["path"]) as db:
        db.execute("create table t(id integer primary key, v text)")
        db.executemany("insert into t values (?, ?)", [(i, f"v{i}") for i in range(rows)])
    return source


def _restored_rows_match(api: httpx.Client, backup_id: str, source: dict[str, Any]) -> int:
    """Restore ``backup_id`` into a new instance, compare its rows with ``source``'s row
    for row; returns how many there are."""
    restored = _instance(api, {"name": "back", "restorePoint": {"backupRef": backup_id}})
    query = "select id, v from t order by id"
    with (
        sqlite3.connect(source["connection"]["path"]) as src,
        sqlite3.connect(restored["connection"]["path"]) as dst,
    ):
        rows = dst.execute(query).fetchall()
        assert rows == src.execute(query).fetchall()
    return len(rows)


def test_two_processes_answer_and_jobs_and_schedules_run_once(tmp_path: Path) -> None:
    # The schedule below fires every 2 seconds: closer than the default minimum allows.
    server = start_server(
        tmp_path / "data", "--workers", "2", env={"STRONGROOM_SCHEDULE_MIN_INTERVAL": "1"}
    )
    try:
        apis = _api_processes(server)
        for i in range(len(apis)):
            assert _answers_alone(server, apis[:i] + apis[i + 1 :])

        # Jobs: every request below lands on one of the API processes; the instance, the
        # backup and the restore are made by the serving process's workers.
        headers = {"X-Auth-Token": server.token(PROJECT)}
        api = httpx.Client(base_url=server.endpoint(PROJECT), headers=headers, timeout=30)
        source = _sqlite_source(api, 300)

        schedule = {
            "backup_schedule": {
                "instance_id": source["id"],
                "name": "often",
                "cron": "* * * * * */2",
                "retention": {"keep_last": 5},
            }
        }
        made = api.post("/backup_schedules", json=schedule)
        assert made.status_code == 200, made.text
        schedule_id = made.json()["backup_schedule"]["id"]

        def scheduled_backup() -> str | None:
            backups = api.get("/backups", params={"instance_id": source["id"]}).json()
            done = [
                b["id"]
                for b in backups["backups"]
                if b.get("schedule_id") == schedule_id and b["status"] == "COMPLETED"
            ]
            return done[0] if done else None

        backup_id = _wait(scheduled_backup)
        api.delete(f"/backup_schedules/{schedule_id}")
        assert _restored_rows_match(api, backup_id, source) == 300
    finally:
        server.stop()
    logged = server.log_path.read_text()
    started = re.findall(r"backup scheduler started in process (\d+)", logged)
    assert started == [str(server.process.pid)]
    # Each API process says once that it takes requests; the serving process does not.
    ready = re.findall(r"API process (\d+) ready", logged)
    assert sorted(int(pid) for pid in ready) == sorted(apis)


def test_the_job_socket_is_the_owners_and_the_allow_list_holds_in_every_process(
    tmp_path: Path,
) -> None:
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    for directory in (allowed, outside):
        directory.mkdir()
        with sqlite3.connect(directory / "app.db") as db:
            db.execute("create table t(x)")
    server = start_server(tmp_path / "data", "--workers", "2", "--sqlite-root", str(allowed))
    try:
        path = server.data_dir / "jobs.sock"
        assert path.exists()
        assert os.stat(path).st_mode & 0o777 == 0o600
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"../../etc/passwd", str(path))
            s.sendto(b"00000000-0000-0000-0000-000000000000", str(path))  # no such job
        _wait(lambda: "not a job id" in server.log_path.read_text(), timeout=10)
        assert _get(server.url + "/").status_code == 200
        assert server.process.poll() is None

        # `--sqlite-root` reaches the API processes: each of them registers a file under
        # it and refuses one outside it.
        headers = {"X-Auth-Token": server.token(PROJECT)}
        apis = _api_processes(server)
        for i in range(len(apis)):
            with (
                _stopped(apis[:i] + apis[i + 1 :]),
                contextlib.closing(
                    _client_of_a_running_process(server, headers=headers, timeout=30)
                ) as api,
            ):
                for directory, status in ((outside, 403), (allowed, 200)):
                    body = {
                        "instance": {
                            "name": f"ext{i}",
                            "datastore": {"type": "sqlite"},
                            "external": {"path": str(directory / "app.db")},
                        }
                    }
                    r = api.post(f"/v1.0/{PROJECT}/instances", json=body)
                    assert r.status_code == status, r.text
    finally:
        assert server.stop() == 0
    assert not (server.data_dir / "jobs.sock").exists()


def test_a_process_that_dies_is_replaced_on_its_own_listener(tmp_path: Path) -> None:
    """The kernel keeps sending a dead process's share of new connections to its listener;
    the replacement serves that listener, so no connection is left waiting."""
    server = start_server(tmp_path / "data", "--workers", "2")
    try:
        first = _api_processes(server)
        os.kill(first[0], signal.SIGKILL)
        now = _wait(lambda: (found := _api_processes(server)) != first and found)
        assert first[1] in now and first[0] not in now
        (replacement,) = set(now) - set(first)
        _wait(lambda: f"API process {replacement} ready" in server.log_path.read_text())
        # Each a new connection: about half of them are hashed to the replaced listener.
        answered = [_get(server.url + "/").status_code for _ in range(24)]
        assert answered == [200] * 24
        for pid in now:  # and each process is needed: alone, each one answers
            assert _answers_alone(server, [other for other in now if other != pid])
    finally:
        assert server.stop() == 0


def test_a_job_whose_hand_off_is_lost_runs_all_the_same(tmp_path: Path) -> None:
    """The job process reads no hand-off for a while (stopped here) and its inbox is full:
    the API process gives up handing the job over, and the job process, once it runs
    again, finds the job QUEUED and runs it."""
    server = start_server(
        tmp_path / "data", "--workers", "2", env={"STRONGROOM_REDISPATCH_AFTER_SECONDS": "1"}
    )
    try:
        headers = {"X-Auth-Token": server.token(PROJECT)}
        api = httpx.Client(base_url=server.endpoint(PROJECT), headers=headers, timeout=30)
        source = _sqlite_source(api, 200)

        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            _wait(lambda: _all_threads_stopped(server.process.pid), timeout=10)
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as filler:
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    for _ in range(100_000):
                        filler.sendto(b"filler", str(server.data_dir / "jobs.sock"))
            made = api.post("/backups", json={"backup": {"name": "b", "instance": source["id"]}})
            assert made.status_code == 202, made.text
            backup_id = made.json()["backup"]["id"]
            _wait(lambda: "not handed to the job process: " in server.log_path.read_text())
        finally:
            os.kill(server.process.pid, signal.SIGCONT)

        def completed() -> bool:
            status = api.get(f"/backups/{backup_id}").json()["backup"]["status"]
            assert status != "FAILED"
            return bool(status == "COMPLETED")

        _wait(completed)
        assert "is still QUEUED (a lost hand-off?); running it now" in server.log_path.read_text()
        assert _restored_rows_match(api, backup_id, source) == 200
    finally:
        assert server.stop() == 0


def test_a_replacement_that_cannot_start_is_retried_while_the_others_serve(
    tmp_path: Path,
) -> None:
    """After the start, a process whose replacement fails to start (here: a key rotation
    left unfinished) does not stop the service: the other process serves, and the
    replacement is tried again until it starts."""
    server = start_server(tmp_path / "data", "--workers", "2")
    journal = server.data_dir / "master.key.rotation"
    try:
        first = _api_processes(server)
        _wait(lambda: "all 2 API processes ready" in server.log_path.read_text())
        journal.write_text("{}")
        os.kill(first[0], signal.SIGKILL)
        _wait(lambda: "failed to start; another in 1 s" in server.log_path.read_text())
        _wait(lambda: "failed to start; another in 2 s" in server.log_path.read_text())
        assert server.process.poll() is None
        assert [_get(server.url + "/").status_code for _ in range(8)] == [200] * 8
        journal.unlink()
        now = _wait(lambda: (found := _api_processes(server)) and first[0] not in found and found)
        (replacement,) = set(now) - {first[1]}
        _wait(
            lambda: f"API process {replacement} started after failed" in server.log_path.read_text()
        )
        assert [_get(server.url + "/").status_code for _ in range(8)] == [200] * 8
        # Its retries start from 1 s again.
        journal.write_text("{}")
        os.kill(replacement, signal.SIGKILL)
        _wait(lambda: server.log_path.read_text().count("failed to start; another in 1 s") == 2)
        assert server.process.poll() is None
    finally:
        journal.unlink(missing_ok=True)
        assert server.stop() == 0


def test_the_api_processes_stop_when_the_serving_process_is_killed(tmp_path: Path) -> None:
    """Killed outright, the serving process cannot stop its API processes: the kernel
    does (they ask for SIGTERM at their parent's death). Left running, they held the port
    against a new start and took requests whose jobs no process would run."""
    server = start_server(tmp_path / "data", "--workers", "2")
    apis = _api_processes(server)
    _wait(lambda: "all 2 API processes ready" in server.log_path.read_text())
    # Held by descriptor, not by pid: a pid freed here may be reused by another test's
    # process, which must be neither waited for nor killed.
    handles = [os.pidfd_open(pid) for pid in apis]
    server.process.kill()
    server.process.wait(30)
    try:
        _wait(lambda: all(select.select([fd], [], [], 0)[0] for fd in handles), timeout=30)
    finally:
        for fd in handles:  # what the kernel did not stop, the test does
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)
    port = int(server.url.rsplit(":", 1)[1])
    again = start_server(server.data_dir, "--workers", "2", port=port)
    try:
        _api_processes(again)
        assert [_get(again.url + "/").status_code for _ in range(8)] == [200] * 8
    finally:
        assert again.stop() == 0
