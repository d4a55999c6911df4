"""The dashboard over the real service in-process: sign-in, sessions, CSRF, tenant
isolation, escaping, and actions going through the API's services and policy."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fixtures.service import Caller, Harness, make_harness
from strongroom.api.app import create_app
from strongroom.bootstrap import edge_settings
from support.dashboard import browser, csrf_of, sign_in

XSS = "<script>alert(1)</script>"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = make_harness(tmp_path)
    try:
        yield harness
    finally:
        harness.container.close()


def chain(caller: Caller) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    inst = caller.wait_instance(caller.create_instance("app-db")["id"])
    full = caller.wait_backup(caller.create_backup(inst["id"], "nightly-full")["id"])
    inc = caller.wait_backup(caller.create_backup(inst["id"], XSS, incremental=1)["id"])
    return inst, full, inc


def test_dashboard_login_with_a_wrong_token_is_refused(h: Harness) -> None:
    client = browser(h)
    page = client.get("/dashboard")
    nonce = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
    assert nonce is not None
    r = client.post("/dashboard/login", data={"login_csrf": nonce.group(1), "token": "nope"})
    assert r.status_code == 401
    assert "not accepted" in r.text
    assert "strongroom_session" not in r.headers.get("set-cookie", "")
    assert 'name="csrf"' not in client.get("/dashboard").text  # still the sign-in form


def test_dashboard_login_without_its_form_nonce_is_refused(h: Harness) -> None:
    client = browser(h)
    r = client.post("/dashboard/login", data={"login_csrf": "x" * 40, "token": h.a.token})
    assert r.status_code == 403
    assert "strongroom_session" not in r.headers.get("set-cookie", "")


def test_dashboard_session_cookie_is_httponly_strict_and_not_the_token(h: Harness) -> None:
    client = browser(h)
    page = client.get("/dashboard")
    nonce = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
    assert nonce is not None
    r = client.post("/dashboard/login", data={"login_csrf": nonce.group(1), "token": h.a.token})
    cookie = [c for c in r.headers.get_list("set-cookie") if c.startswith("strongroom_session=")]
    assert len(cookie) == 1
    lowered = cookie[0].lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "secure" not in lowered
    assert h.a.token not in cookie[0] and h.a.token not in r.headers["location"]
    assert h.a.token not in client.get("/dashboard").text


def test_dashboard_cookie_is_secure_over_https(h: Harness) -> None:
    client = browser(h, "https://127.0.0.1:8779")
    page = client.get("/dashboard")
    assert "secure" in page.headers["set-cookie"].lower()
    nonce = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
    assert nonce is not None
    r = client.post(
        "/dashboard/login",
        data={"login_csrf": nonce.group(1), "token": h.a.token},
        headers={"origin": "https://127.0.0.1:8779"},
    )
    assert "secure" in r.headers["set-cookie"].lower()


def test_dashboard_cookies_are_secure_behind_a_tls_proxy_when_told(tmp_path: Path) -> None:
    """A proxy that ends TLS speaks http to the service: ``secure_cookies`` marks the
    cookies Secure all the same (the browser then sends them over https only)."""
    harness = make_harness(tmp_path, secure_cookies=True)
    try:
        app = create_app(harness.container.services, edge_settings(harness.settings))
        client = TestClient(app, base_url="http://127.0.0.1:8779", follow_redirects=False)
        page = client.get("/dashboard")
        login_cookie = page.headers["set-cookie"]
        assert "secure" in login_cookie.lower()
        nonce = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
        assert nonce is not None
        # What the browser sends back to the proxy over https.
        r = client.post(
            "/dashboard/login",
            data={"login_csrf": nonce.group(1), "token": harness.a.token},
            headers={"cookie": login_cookie.split(";", 1)[0]},
        )
        assert r.status_code == 303, r.text
        session = [c for c in r.headers.get_list("set-cookie") if "strongroom_session=" in c]
        assert len(session) == 1 and "secure" in session[0].lower()
    finally:
        harness.container.close()


def test_dashboard_shows_chains_and_escapes_names(h: Harness) -> None:
    _inst, full, inc = chain(h.a)
    page = sign_in(browser(h), h.a.token).get("/dashboard")
    assert page.status_code == 200
    assert "app-db" in page.text and "nightly-full" in page.text
    assert XSS not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert page.text.index(full["id"]) < page.text.index(inc["id"])  # the child below
    assert "last good backup" in page.text and 'class="last-good fresh"' in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")


def test_dashboard_member_of_another_project_sees_and_reaches_nothing(h: Harness) -> None:
    inst, full, _inc = chain(h.a)
    b = sign_in(browser(h), h.b.token)
    page = b.get("/dashboard").text
    for secret in (inst["id"], full["id"], "app-db", "nightly-full"):
        assert secret not in page
    csrf = csrf_of(b)
    assert b.get(f"/dashboard/backups/{full['id']}/progress").status_code == 404
    assert b.get(f"/dashboard/backups/{full['id']}/delete").status_code == 404
    r = b.post(f"/dashboard/backups/{full['id']}/delete", data={"csrf": csrf})
    assert r.status_code == 404
    r = b.post(f"/dashboard/instances/{inst['id']}/backups", data={"csrf": csrf})
    assert r.status_code == 404
    r = b.post(f"/dashboard/backups/{full['id']}/restore", data={"csrf": csrf, "name": "x"})
    assert r.status_code == 404
    assert h.a.get(f"/backups/{full['id']}").json()["backup"]["status"] == "COMPLETED"
    assert len(h.a.get("/backups").json()["backups"]) == 2


def test_dashboard_post_without_csrf_or_from_another_origin_is_refused(h: Harness) -> None:
    inst = h.a.wait_instance(h.a.create_instance("db")["id"])
    a = sign_in(browser(h), h.a.token)
    csrf = csrf_of(a)
    url = f"/dashboard/instances/{inst['id']}/backups"
    assert a.post(url, data={}).status_code == 403
    assert a.post(url, data={"csrf": "wrong"}).status_code == 403
    r = a.post(url, data={"csrf": csrf}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    assert a.post(url, json={"csrf": csrf}).status_code == 400  # forms only
    assert h.a.get("/backups").json()["backups"] == []
    r = a.post(url, data={"csrf": csrf, "name": "ok"}, headers={"origin": "http://127.0.0.1:8779"})
    assert r.status_code == 303
    assert [b["name"] for b in h.a.get("/backups").json()["backups"]] == ["ok"]


def test_dashboard_reader_sees_but_cannot_act(h: Harness) -> None:
    inst, full, _inc = chain(h.a)
    reader = sign_in(browser(h), h.token("proja", "reader"))
    page = reader.get("/dashboard").text
    assert "nightly-full" in page and "Back up now" not in page and "read only" in page
    csrf = csrf_of(reader)
    r = reader.post(f"/dashboard/instances/{inst['id']}/backups", data={"csrf": csrf})
    assert r.status_code == 403
    r = reader.post(f"/dashboard/backups/{full['id']}/delete", data={"csrf": csrf})
    assert r.status_code == 403
    assert len(h.a.get("/backups").json()["backups"]) == 2


def test_dashboard_admin_sees_every_project(h: Harness) -> None:
    inst_a, full_a, _ = chain(h.a)
    inst_b = h.b.wait_instance(h.b.create_instance("b-db")["id"])
    admin = sign_in(browser(h), h.admin.token)
    page = admin.get("/dashboard").text
    assert 'id="project-proja"' in page and 'id="project-projb"' in page
    assert inst_a["id"] in page and inst_b["id"] in page and full_a["id"] in page


def test_dashboard_delete_spells_out_the_cascade_then_deletes_it(h: Harness) -> None:
    _inst, full, inc = chain(h.a)
    a = sign_in(browser(h), h.a.token)
    confirm = a.get(f"/dashboard/backups/{full['id']}/delete")
    assert confirm.status_code == 200
    assert 'id="cascade-warning"' in confirm.text and inc["id"] in confirm.text
    assert "Delete 2 backups" in confirm.text
    csrf = csrf_of(a)
    r = a.post(f"/dashboard/backups/{full['id']}/delete", data={"csrf": csrf})
    assert r.status_code == 303
    h.wait_idle()
    assert h.a.get("/backups").json()["backups"] == []


def test_dashboard_back_up_now_and_restore_go_through_the_services(h: Harness) -> None:
    inst = h.a.wait_instance(h.a.create_instance("db")["id"])
    rows = [(i, f"row {i} {XSS}") for i in range(500)]
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("create table t(id integer primary key, body text)")
        db.executemany("insert into t values (?, ?)", rows)
    a = sign_in(browser(h), h.a.token)
    csrf = csrf_of(a)
    r = a.post(f"/dashboard/instances/{inst['id']}/backups", data={"csrf": csrf, "name": XSS})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard?notice=backup"
    (made,) = h.a.get("/backups").json()["backups"]
    done = h.a.wait_backup(made["id"])
    bar = a.get(f"/dashboard/backups/{done['id']}/progress")
    assert 'data-status="COMPLETED"' in bar.text and "hx-trigger" not in bar.text
    assert XSS not in bar.text
    r = a.post(f"/dashboard/backups/{done['id']}/restore", data={"csrf": csrf, "name": "back"})
    assert r.status_code == 303, r.text
    restored = [i for i in h.a.get("/instances").json()["instances"] if i["name"] == "back"]
    assert len(restored) == 1
    back = h.a.wait_instance(restored[0]["id"])
    with sqlite3.connect(back["connection"]["path"]) as db:
        assert db.execute("select id, body from t order by id").fetchall() == rows


def test_dashboard_sign_out_and_revocation_end_the_session(h: Harness) -> None:
    a = sign_in(browser(h), h.a.token)
    csrf = csrf_of(a)
    assert a.post("/dashboard/logout", data={}).status_code == 403  # CSRF on sign-out too
    assert a.post("/dashboard/logout", data={"csrf": csrf}).status_code == 303
    assert 'name="login_csrf"' in a.get("/dashboard").text
    issued = h.container.services.tokens.create(project_id="proja", user_id="u", roles=("member",))
    b = sign_in(browser(h), issued.token)
    assert 'name="csrf"' in b.get("/dashboard").text
    h.container.services.tokens.revoke(issued.id)
    assert 'name="login_csrf"' in b.get("/dashboard").text


def test_dashboard_does_not_open_the_api_to_its_cookie(h: Harness) -> None:
    a = sign_in(browser(h), h.a.token)
    assert a.get("/v1.0/proja/backups").status_code == 401  # the cookie is not a token


def test_dashboard_static_files_stay_in_their_directory(h: Harness) -> None:
    client = browser(h)
    assert client.get("/dashboard/static/htmx.min.js").status_code == 200
    for probe in (
        "/dashboard/static/../sessions.py",
        "/dashboard/static/%2e%2e/sessions.py",
        "/dashboard/static/..%2fsessions.py",
        "/dashboard/static/%2e%2e%2f%2e%2e%2fapp.py",
    ):
        r = client.get(probe)
        assert r.status_code == 404, probe
        assert "SessionStore" not in r.text and "create_app" not in r.text


def test_dashboard_unknown_session_and_oversized_form_are_refused(h: Harness) -> None:
    client = browser(h)
    client.cookies.set("strongroom_session", "forged-value", path="/dashboard")
    assert 'name="login_csrf"' in client.get("/dashboard").text
    a = sign_in(browser(h), h.a.token)
    csrf = csrf_of(a)
    r = a.post("/dashboard/logout", data={"csrf": csrf, "pad": "x" * 20_000})
    assert r.status_code == 400
    assert 'name="csrf"' in a.get("/dashboard").text  # still signed in


def test_dashboard_session_works_in_another_api_process_and_ends_at_sign_out(
    h: Harness,
) -> None:
    a = sign_in(browser(h), h.a.token)
    cookie = a.cookies.get("strongroom_session")
    assert cookie is not None
    # another API process: its own app and signer, the same key (from the master key)
    other = TestClient(create_app(h.container.services), base_url="http://127.0.0.1:8779")
    other.cookies.set("strongroom_session", cookie, path="/dashboard")
    assert 'name="csrf"' in other.get("/dashboard").text
    assert a.post("/dashboard/logout", data={"csrf": csrf_of(a)}).status_code == 303
    replay = browser(h)
    replay.cookies.set("strongroom_session", cookie, path="/dashboard")
    assert 'name="login_csrf"' in replay.get("/dashboard").text  # ended in this process
