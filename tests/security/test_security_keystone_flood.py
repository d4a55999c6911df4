"""Tokens nobody issued cost Keystone little: a refused token is refused again without
asking a real Keystone (its access log counts the validations), and beyond the bound of
validations waiting for a thread a request is answered 503 at once instead of queueing
behind them (Keystone here a listener that never answers)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.keystone import SERVICE_TIMEOUTS, KeystoneServer, create_project, create_user
from fixtures.service import Harness, make_harness, wait_for
from strongroom.api.keystone import VALIDATION_QUEUE, VALIDATION_THREADS, KeystoneTokens

BASE_URL = "http://127.0.0.1:8779"


@pytest.fixture(scope="module")
def service_account(keystone_admin: Any) -> dict[str, str]:
    """Strongroom's own Keystone user: the ``service`` role lets it validate others' tokens."""
    project = create_project(keystone_admin, "svc")
    user, password = create_user(keystone_admin, project.id, ("service",))
    return {"username": user.name, "password": password, "project_name": project.name}


def _keystone_of(harness: Harness) -> KeystoneTokens:
    keystone = harness.container.services.external_tokens
    assert isinstance(keystone, KeystoneTokens)
    return keystone


class _AccessLog:
    """Keystone's access log (one sync worker: requests are logged in the order served)."""

    def __init__(self, server: KeystoneServer) -> None:
        self._server = server
        self._path = server.base / "log" / "keystone-access.log"

    def mark(self) -> str:
        """A request of our own, waited for in the log: every earlier one is logged."""
        mark = f"strongroom-mark={uuid.uuid4().hex}"
        httpx.get(f"{self._server.auth_url}?{mark}", timeout=30)
        wait_for(lambda: mark in self._path.read_text(), timeout=30)
        return mark

    def validations(self, after: str, until: str) -> int:
        text = self._path.read_text()
        between = text[text.index(after) : text.index(until)]
        return len(re.findall(r'"GET /v3/auth/tokens[? ]', between))  # a validation


def test_a_refused_token_is_not_validated_again(
    tmp_path: Path, keystone_server: KeystoneServer, service_account: dict[str, str]
) -> None:
    table = {
        "enabled": True,
        "auth_url": keystone_server.auth_url,
        **service_account,
        "region_name": keystone_server.region,
        "interface": "public",
        "token_cache_time": 0,  # even so: a refusal is remembered
        **SERVICE_TIMEOUTS,
    }
    harness = make_harness(tmp_path, keystone=table)
    junk = "gAAAAAB" + secrets.token_urlsafe(96)  # shaped as a Fernet token, issued by nobody
    log = _AccessLog(keystone_server)
    with harness.client:
        first = log.mark()
        for _ in range(3):
            answer = harness.client.get(
                "/v1.0/some-project/backups", headers={"X-Auth-Token": junk}
            )
            assert answer.status_code == 401
        last = log.mark()
        keystone = _keystone_of(harness)
    assert log.validations(first, last) == 1
    assert junk not in keystone._refused  # kept as a digest only
    assert hashlib.sha256(junk.encode()).hexdigest() in keystone._refused


def test_beyond_the_waiting_bound_a_request_is_503_at_once(tmp_path: Path) -> None:
    bound = VALIDATION_THREADS + VALIDATION_QUEUE
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(bound + 16)
        table = {
            "enabled": True,
            "auth_url": f"http://127.0.0.1:{silent.getsockname()[1]}/v3",
            "username": "nobody",
            "password": "nothing",
            "project_name": "service",
            "validation_timeout": 30.0,
            "http_connect_timeout": 30.0,
        }
        harness = make_harness(tmp_path, keystone=table)
        keystone = _keystone_of(harness)
        try:
            answer, waited = asyncio.run(_one_more(harness, keystone, bound))
        finally:
            keystone.close()
            harness.container.close()
    assert answer.status_code == 503, answer.text
    assert answer.json()["serviceUnavailable"]["code"] == 503
    assert waited < 2, waited


async def _one_more(harness: Harness, keystone: KeystoneTokens, bound: int) -> tuple[Any, float]:
    """``bound`` validations in flight, then one more request through the service."""
    waiting = [asyncio.create_task(keystone.authenticate(f"junk-{i}")) for i in range(bound)]
    await asyncio.sleep(0)  # a yield, not a wait: each task runs up to its validation
    transport = httpx.ASGITransport(app=harness.client.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            started = time.monotonic()
            request = client.get("/v1.0/some-project/backups", headers={"X-Auth-Token": "more"})
            answer = await asyncio.wait_for(request, 10)
            return answer, time.monotonic() - started
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
