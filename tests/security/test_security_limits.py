"""Limits on a live server: body size, string lengths, page sizes, and slow or idle clients."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx
import pytest

from security.wire import Site, assert_fault, live_site

LIMIT = 1024 * 1024  # Services.max_body_bytes
S256 = "a" * 256


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with live_site(tmp_path_factory.mktemp("limits")) as site:
        instance = site.a.create_instance("limits")
        site.a.wait_instance(instance["id"])
        site.data["a"] = {"instance": instance}
        yield site


def _address(site: Site) -> tuple[str, int]:
    host, port = site.server.url.removeprefix("http://").split(":")
    return host, int(port)


def test_body_over_the_limit_is_413(site: Site) -> None:
    body = {"backup": {"name": "x" * (LIMIT + 1)}}
    assert_fault(site.a.post("/backups", body), 413)


def test_chunked_body_over_the_limit_is_413(site: Site) -> None:
    """No Content-Length: the limit holds while the body streams in."""

    def chunks() -> Iterator[bytes]:
        yield b'{"backup": {"name": "'
        for _ in range(LIMIT // 65536 + 2):
            yield b"x" * 65536
        yield b'"}}'

    r = site.a.request(
        "POST", "/backups", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_fault(r, 413)


def test_declared_length_over_the_limit_is_refused_without_reading(site: Site) -> None:
    request = (
        f"POST /v1.0/{site.a.project}/backups HTTP/1.1\r\nHost: x\r\n"
        f"X-Auth-Token: {site.a.token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {10**12}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(_address(site), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"overLimit"' in reply


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/backups", {"backup": {"name": S256}}),
        ("/backups", {"backup": {"name": "n", "description": S256}}),
        ("/backups", {"backup": {"name": "n", "swift_container": S256}}),
        (
            "/backups",
            {
                "backup": {
                    "name": "n",
                    "restore_from": {
                        "remote_location": "file:///" + S256,
                        "local_datastore_version_id": "00000000-0000-0000-0000-000000000000",
                        "size": 1,
                    },
                }
            },
        ),
        ("/backup_strategies", {"backup_strategy": {"swift_container": S256}}),
        ("/instances", {"instance": {"name": S256, "flavorRef": "1"}}),
        ("/instances", {"instance": {"name": "n", "users": [{"name": "u", "password": S256}]}}),
    ],
    ids=["name", "description", "container", "location", "strategy", "instance", "password"],
)
def test_strings_over_255_are_400(site: Site, path: str, body: object) -> None:
    fault = assert_fault(site.a.post(path, body), 400)
    assert "is too long" in fault["badRequest"]["message"]


BAD_NUMBERS = ["abc", "-1", f"{2**64}", f"{10**30}", "1_0", "%D9%A3", "1.5"]
PAGED = ["/backups", "/instances", "/instances/{i}/backups"]


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("name", ["limit", "marker"])
@pytest.mark.parametrize("path", PAGED)
def test_page_parameters_that_are_not_sane_integers_are_400(
    site: Site, path: str, name: str, value: str
) -> None:
    instance = site.data["a"]["instance"]["id"]
    assert_fault(site.a.get(f"{path.format(i=instance)}?{name}={value}"), 400)


@pytest.mark.parametrize("value", ["0", "1001"])
@pytest.mark.parametrize("path", ["/backups", "/instances/{i}/backups"])
def test_backup_pages_are_1_to_1000_rows(site: Site, path: str, value: str) -> None:
    instance = site.data["a"]["instance"]["id"]
    assert_fault(site.a.get(f"{path.format(i=instance)}?limit={value}"), 400)


def test_largest_page_is_served(site: Site) -> None:
    assert site.a.get("/backups?limit=1000").status_code == 200
    assert site.a.get(f"/backups?marker={2**63 - 1}").json() == {"backups": []}


@contextmanager
def idle_and_slow_clients(site: Site, idle: int, slow: int) -> Iterator[None]:
    """``idle`` connections that send nothing and ``slow`` ones stuck inside their headers."""
    with ExitStack() as stack:
        for i in range(idle + slow):
            sock = stack.enter_context(socket.create_connection(_address(site), timeout=5))
            if i >= idle:
                sock.sendall(
                    f"GET /v1.0/{site.a.project}/backups HTTP/1.1\r\nHost: x\r\nX-Au".encode()
                )
        yield


def _normal_request(site: Site) -> httpx.Response:
    started = time.monotonic()
    with httpx.Client(base_url=site.server.url, timeout=5) as fresh:
        r = fresh.get(f"/v1.0/{site.a.project}/backups", headers={"X-Auth-Token": site.a.token})
    assert time.monotonic() - started < 5
    return r


def test_idle_and_slow_clients_do_not_starve_others(site: Site) -> None:
    with idle_and_slow_clients(site, idle=250, slow=50):
        r = _normal_request(site)
    assert r.status_code == 200, r.text


def test_server_serves_again_once_slow_clients_leave(site: Site) -> None:
    with idle_and_slow_clients(site, idle=250, slow=50):
        pass
    deadline = time.monotonic() + 5
    while (r := _normal_request(site)).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert r.status_code == 200
    assert site.server.process.poll() is None
