"""Signing in to the dashboard of an in-process service, as a browser would."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from fixtures.service import Harness


def browser(h: Harness, base_url: str = "http://127.0.0.1:8779") -> TestClient:
    return TestClient(h.client.app, base_url=base_url, follow_redirects=False)


def sign_in(client: TestClient, token: str) -> TestClient:
    page = client.get("/dashboard")
    assert page.status_code == 200
    nonce = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
    assert nonce is not None
    r = client.post("/dashboard/login", data={"login_csrf": nonce.group(1), "token": token})
    assert r.status_code == 303, r.text
    return client


def csrf_of(client: TestClient) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/dashboard").text)
    assert found is not None
    return found.group(1)
