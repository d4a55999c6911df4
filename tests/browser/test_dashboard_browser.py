"""The dashboard in a real browser (Debian's chromium, headless, driven over the DevTools
protocol) against a live `strongroom serve`: sign-in, a chain, a backup whose bar moves
to COMPLETED, a delete that names its cascade first, another project's member seeing
nothing, a hostile name shown as text, a wrong token refused, an HttpOnly cookie.

Screenshots of the pages land in docs/screenshots/ with STRONGROOM_TEST_SCREENSHOTS=1."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.cdp import CHROMIUM, Browser
from fixtures.live import REPO, LiveServer, start_server
from fixtures.service import wait_for

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

# The pages are photographed on every run; into docs/screenshots only when asked
# (STRONGROOM_TEST_SCREENSHOTS=1), so a test run leaves the checkout as it was.
SCREENSHOTS_IN_DOCS = os.environ.get("STRONGROOM_TEST_SCREENSHOTS") == "1"
XSS = "<script>window.pwned=1</script>"
BIG_ROWS = 4800  # 64 KiB of random bytes each, ~300 MiB: several seconds to back up


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(tmp_path / "data")
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    chrome = Browser(tmp_path / "profile")
    try:
        yield chrome
    finally:
        chrome.close()


class Api:
    def __init__(self, server: LiveServer, project: str) -> None:
        self.token = server.token(project)
        self.http = httpx.Client(
            base_url=server.endpoint(project), headers={"X-Auth-Token": self.token}, timeout=30
        )

    def instance(self, name: str) -> dict[str, Any]:
        body = {"instance": {"name": name, "flavorRef": "1", "datastore": {"type": "sqlite"}}}
        instance_id = self.http.post("/instances", json=body).json()["instance"]["id"]

        def active() -> dict[str, Any] | None:
            found: dict[str, Any] = self.http.get(f"/instances/{instance_id}").json()["instance"]
            return found if found["status"] == "ACTIVE" else None

        result: dict[str, Any] = wait_for(active, timeout=60)
        return result

    def backup(self, instance_id: str, name: str, incremental: bool = False) -> dict[str, Any]:
        body = {"backup": {"name": name, "instance": instance_id, "incremental": int(incremental)}}
        backup_id = self.http.post("/backups", json=body).json()["backup"]["id"]

        def done() -> dict[str, Any] | None:
            found: dict[str, Any] = self.http.get(f"/backups/{backup_id}").json()["backup"]
            assert found["status"] != "FAILED", found
            return found if found["status"] == "COMPLETED" else None

        result: dict[str, Any] = wait_for(done, timeout=120)
        return result

    def backups(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.http.get("/backups").json()["backups"]
        return found


def sign_in(browser: Browser, server: LiveServer, token: str) -> None:
    browser.goto(f"{server.url}/dashboard")
    browser.fill("#token", token)
    browser.submit("#sign-in")


def test_dashboard_in_a_browser(server: LiveServer, browser: Browser, tmp_path: Path) -> None:
    shots = REPO / "docs" / "screenshots" if SCREENSHOTS_IN_DOCS else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    demo = Api(server, "demo")
    inst = demo.instance("orders-db")
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("create table t(id integer primary key, body blob)")
        db.executemany(
            "insert into t values (?, randomblob(65536))", [(i,) for i in range(BIG_ROWS)]
        )
    full = demo.backup(inst["id"], "nightly-full")
    inc = demo.backup(inst["id"], XSS, incremental=True)

    # a wrong token is refused, and no session cookie is set
    sign_in(browser, server, "srt_not-a-token")
    assert "That token was not accepted." in browser.text("#error")
    assert not [c for c in browser.cookies() if c["name"] == "strongroom_session"]
    browser.screenshot(shots / "dashboard-sign-in-refused.png")

    # signed in: the session cookie is HttpOnly and SameSite=Strict, out of the page's reach
    sign_in(browser, server, demo.token)
    (cookie,) = [c for c in browser.cookies() if c["name"] == "strongroom_session"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert demo.token not in cookie["value"]
    assert "strongroom_session" not in browser.evaluate("document.cookie")
    assert demo.token not in browser.evaluate("document.documentElement.outerHTML")

    # the chain: the incremental drawn under its full backup; the hostile name is text
    tree = browser.evaluate(
        f"""[...document.querySelectorAll('li.backup[data-backup-id="{inc["id"]}"]')]
            .map(li => li.parentElement.closest('li.backup').dataset.backupId)"""
    )
    assert tree == [full["id"]]
    shown = browser.evaluate(
        f"""document.querySelector('li.backup[data-backup-id="{inc["id"]}"] .name')
            .textContent"""
    )
    assert shown == XSS
    assert browser.evaluate("window.pwned") is None
    assert browser.evaluate("document.scripts.length") == 1  # htmx only
    assert "last good backup" in browser.text(".last-good")

    # an instance never backed up is red; a failed backup shows its reason; a schedule
    # shows its next run
    demo.instance("billing-db")
    legacy = demo.instance("legacy-db")
    db_path = Path(legacy["connection"]["path"])
    for leftover in db_path.parent.glob(db_path.name + "*"):
        leftover.unlink()
    failed_id = demo.http.post(
        "/backups", json={"backup": {"name": "legacy-nightly", "instance": legacy["id"]}}
    ).json()["backup"]["id"]
    wait_for(lambda: demo.http.get(f"/backups/{failed_id}").json()["backup"]["status"] == "FAILED")
    reason = demo.http.get(f"/backups/{failed_id}").json()["backup"]["fail_reason"]
    schedule = {"instance_id": inst["id"], "name": "nightly", "cron": "0 3 * * *"}
    r = demo.http.post("/backup_schedules", json={"backup_schedule": schedule})
    assert r.status_code in (200, 201, 202), r.text
    browser.goto(f"{server.url}/dashboard")
    stale = browser.evaluate(
        """[...document.querySelectorAll('.instance')]
             .filter(i => i.querySelector('.last-good.stale'))
             .map(i => i.querySelector('h3 .name').textContent)"""
    )
    assert sorted(stale) == ["billing-db", "legacy-db"]
    assert reason in browser.text(".failed")
    assert "0 3 * * *" in browser.text(".schedules")
    browser.screenshot(shots / "dashboard-overview.png")

    # back up now: the bar polls every second and moves to COMPLETED
    card = f'.instance[data-instance-id="{inst["id"]}"] .backup-now'
    browser.fill(f"{card} input[name=name]", "from-the-dashboard")
    browser.submit(f"{card} button")
    assert "Backup started." in browser.text("#notice")
    seen: list[tuple[str, int]] = []
    shot_taken = False

    def finished() -> bool:
        nonlocal shot_taken
        state = browser.evaluate(
            """(() => { const bar = [...document.querySelectorAll('.running .progress')]
                  .find(p => p.querySelector('.name').textContent === 'from-the-dashboard');
                return bar ? [bar.dataset.status, Number(bar.dataset.percent)] : null; })()"""
        )
        assert state is not None, "no progress bar for the new backup"
        if not seen or seen[-1] != tuple(state):
            seen.append((state[0], state[1]))
        if not shot_taken and state[0] != "COMPLETED" and 5 <= state[1] <= 95:
            browser.screenshot(shots / "dashboard-progress.png")
            shot_taken = True
        ended: bool = state[0] not in ("NEW", "BUILDING", "SAVING")
        return ended

    browser.wait(finished, timeout=180, interval=0.1)
    assert seen[0][0] in ("NEW", "BUILDING", "SAVING"), seen  # it was drawn while running
    assert seen[-1] == ("COMPLETED", 100), seen
    percents = [p for _, p in seen]
    assert percents == sorted(percents), seen  # forward only
    assert any(0 < p < 100 for p in percents), f"the bar never stood between: {seen}"
    assert shot_taken, seen

    # delete the full backup: the confirmation names every backup that goes with it
    browser.goto(f"{server.url}/dashboard")
    browser.evaluate(
        f"""document.querySelector('li.backup[data-backup-id="{full["id"]}"] a.action')
            .click()"""
    )
    browser.wait_loaded(url_prefix=f"{server.url}/dashboard/backups/{full['id']}/delete")
    warning = browser.text("#confirm-delete")
    assert "also deletes 1 backup built on it" in warning
    assert inc["id"] in warning and XSS in warning
    browser.screenshot(shots / "dashboard-delete-cascade.png")
    browser.submit("#confirm")
    assert "Deletion requested." in browser.text("#notice")
    wait_for(lambda: {b["id"] for b in demo.backups()}.isdisjoint({full["id"], inc["id"]}), 60)

    # sign out; a member of another project sees nothing of the first
    browser.submit("#sign-out")
    assert not [c for c in browser.cookies() if c["name"] == "strongroom_session"]
    other = Api(server, "other")
    sign_in(browser, server, other.token)
    page = browser.evaluate("document.documentElement.outerHTML")
    for secret in (inst["id"], "orders-db", "from-the-dashboard", demo.token):
        assert secret not in page
    assert "Project other" in browser.text("h2")
    left = [b for b in demo.backups() if b["name"] == "from-the-dashboard"]
    browser.goto(f"{server.url}/dashboard/backups/{left[0]['id']}/delete")
    assert "from-the-dashboard" not in browser.text()
    assert "Refused" in browser.text("h2")
    json.dumps(seen)  # what the bar showed, for the failure message above
