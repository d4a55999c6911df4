"""Routes whose service calls may block (writes, store round trips) run them in the caller's
project's share of threads: one project holding every thread it may have leaves another's
requests answering, and no write runs on the event loop.

The app runs in one event loop (a TestClient's portal, lifespan and all: the thread pool
is cut as in production), and the requests are sent into it concurrently over ASGI."""

from __future__ import annotations

import re
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

from fixtures.clocked import ManualClock, make_clocked_harness
from fixtures.service import ADMIN_PROJECT, PROJECT_A, PROJECT_B, Harness
from strongroom.api.app import create_app
from strongroom.api.dashboard import overview
from strongroom.api.edge import EdgeSettings
from strongroom.domain.model import RequestContext

BASE = "http://127.0.0.1:8779"
ANSWER_WITHIN = 10.0  # seconds for the other project's request; it takes milliseconds


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = make_clocked_harness(tmp_path, ManualClock(datetime(2031, 3, 2)))
    try:
        yield harness
    finally:
        harness.container.queue.release()
        harness.container.close()


@dataclass
class Project:
    project: str
    token: str
    instance: str
    backup: str
    schedule: str
    session: dict[str, str] = field(default_factory=dict)  # its dashboard cookie


def project_of(h: Harness, who: str) -> Project:
    caller = h.callers[who]
    inst = caller.wait_instance(caller.create_instance("db")["id"])["id"]
    backup = caller.wait_backup(caller.create_backup(inst)["id"])["id"]
    body = {"backup_schedule": {"instance_id": inst, "name": "n", "cron": "0 3 * * *"}}
    r = caller.post("/backup_schedules", body)
    assert r.status_code == 200, r.text
    return Project(caller.project, caller.token, inst, backup, r.json()["backup_schedule"]["id"])


def in_one_loop(h: Harness, main: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """``main(client)`` on the event loop of a started app (its lifespan has run)."""
    app = create_app(h.container.services)

    async def run() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return await main(client)

    with TestClient(app, base_url=BASE) as started:
        assert started.portal is not None
        return started.portal.call(run)


class Held:
    """Wraps a call: a call for ``project`` waits for ``release`` (counted in ``entered``),
    then runs the real one; any other project's call runs at once."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.release = threading.Event()
        self.entered = 0
        self._lock = threading.Lock()

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            ctx = next(a for a in (*args, *kwargs.values()) if isinstance(a, RequestContext))
            if ctx.project_id == self.project:
                with self._lock:
                    self.entered += 1
                assert self.release.wait(60), "never released"
            return real(*args, **kwargs)

        return call


async def sign_in(client: httpx.AsyncClient, token: str) -> dict[str, str]:
    """A dashboard session's cookie header, signed in as a browser would (the client keeps
    no cookie: each request names its session)."""
    client.cookies.clear()
    page = await client.get("/dashboard")
    nonce = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
    assert nonce is not None
    r = await client.post("/dashboard/login", data={"login_csrf": nonce.group(1), "token": token})
    assert r.status_code == 303, r.text
    session = r.cookies["strongroom_session"]
    client.cookies.clear()
    return {"Cookie": f"strongroom_session={session}"}


Request = Callable[[httpx.AsyncClient, Project], Awaitable[httpx.Response]]


def api(method: str, path: str) -> Request:
    async def send(client: httpx.AsyncClient, p: Project) -> httpx.Response:
        url = f"/v1.0/{p.project}" + path.format(s=p.schedule, b=p.backup)
        return await client.request(method, url, headers={"X-Auth-Token": p.token})

    return send


async def dashboard(client: httpx.AsyncClient, p: Project) -> httpx.Response:
    return await client.get("/dashboard", headers=p.session)


# The call a project's request reaches (held for project A), the request, B's answer.
CASES: dict[str, tuple[Callable[[Harness], tuple[Any, str]], Request, int]] = {
    "prune": (
        lambda h: (h.container.services.schedules, "prune"),
        api("POST", "/backup_schedules/{s}/prune?dry_run=1"),
        200,
    ),
    "run": (
        lambda h: (h.container.services.schedules, "run_now"),
        api("POST", "/backup_schedules/{s}/run"),
        202,
    ),
    "delete": (
        lambda h: (h.container.services.schedules, "delete"),
        api("DELETE", "/backup_schedules/{s}"),
        202,
    ),
    "verify": (
        lambda h: (h.container.services.verification, "request"),
        api("POST", "/backups/{b}/verify"),
        202,
    ),
    "drill": (
        lambda h: (h.container.services.drills, "request"),
        api("POST", "/backups/{b}/drill"),
        202,
    ),
    "dashboard": (lambda h: (overview, "project_overview"), dashboard, 200),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_project_holding_its_threads_stalls_no_other_project(
    h: Harness, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    target, send, expected = CASES[case]
    a, b = project_of(h, "a"), project_of(h, "b")
    held = Held(PROJECT_A)
    owner, name = target(h)
    monkeypatch.setattr(owner, name, held.wrap(getattr(owner, name)))
    # As many of A's requests as the service has request threads, all held.
    crowd = h.container.services.request_threads
    share = EdgeSettings().blocking_threads_per_project  # what A's calls get at least
    h.container.queue.hold()  # the jobs B's requests make stay queued

    async def main(client: httpx.AsyncClient) -> tuple[httpx.Response | None, list[int]]:
        if case == "dashboard":
            for p in (a, b):
                p.session = await sign_in(client, p.token)
        answers: list[int] = []

        async def from_a() -> None:
            answers.append((await send(client, a)).status_code)

        theirs: httpx.Response | None = None
        async with anyio.create_task_group() as tg:
            for _ in range(crowd):
                tg.start_soon(from_a)
            try:
                with anyio.fail_after(ANSWER_WITHIN):
                    while held.entered < share:
                        await anyio.sleep(0.01)
                    await anyio.sleep(0.3)  # the rest take what they can
                    theirs = await send(client, b)
            except TimeoutError:
                pass
            finally:
                held.release.set()
        return theirs, answers

    theirs, answers = in_one_loop(h, main)
    assert theirs is not None, f"project B's {case} did not answer while A's calls were held"
    assert theirs.status_code == expected, theirs.text
    assert len(answers) == crowd and all(s < 500 for s in answers), answers


@pytest.mark.parametrize("case", ["create", "replace", "quotas"])
def test_writes_run_off_the_event_loop(
    h: Harness, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    a = project_of(h, "a")
    services = h.container.services
    schedule = {"backup_schedule": {"instance_id": a.instance, "name": "w", "cron": "0 4 * * *"}}
    owner, name, method, url, body, token = {
        "create": (
            services.schedules,
            "create",
            "POST",
            f"/v1.0/{PROJECT_A}/backup_schedules",
            schedule,
            a.token,
        ),
        "replace": (
            services.schedules,
            "replace",
            "PUT",
            f"/v1.0/{PROJECT_A}/backup_schedules/{a.schedule}",
            schedule,
            a.token,
        ),
        "quotas": (
            services.quotas,
            "update",
            "PUT",
            f"/v1.0/{ADMIN_PROJECT}/mgmt/quotas/{PROJECT_B}",
            {"quotas": {"backups": 7}},
            h.admin.token,
        ),
    }[case]
    threads: list[threading.Thread] = []
    real = getattr(owner, name)

    def recorded(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recorded)

    async def main(client: httpx.AsyncClient) -> tuple[threading.Thread, httpx.Response]:
        r = await client.request(method, url, json=body, headers={"X-Auth-Token": token})
        return threading.current_thread(), r

    loop_thread, r = in_one_loop(h, main)
    assert r.status_code == 200, r.text
    assert len(threads) == 1
    assert threads[0] is not loop_thread, f"{case} ran on the event loop's thread"
