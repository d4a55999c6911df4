"""Storage failures against a real Swift: a stopped server, a hanging one, wrong secrets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.swift import (
    SwiftServer,
    make_s3_store_config,
    make_swift_store_config,
    skip_or_fail,
    start_swift,
    stop_swift,
    swift_ports,
    unique_container,
)
from strongroom.storage.config import SwiftStoreConfig
from strongroom.storage.errors import StorageAuthError, TransientStorageError
from strongroom.storage.registry import build_backend
from strongroom.storage.swift import SwiftBackend

pytestmark = pytest.mark.integration


@pytest.fixture
def own_swift(tmp_path: Path) -> Iterator[SwiftServer]:
    """A Swift of this test's own, so that it can be stopped."""
    outcome = start_swift(tmp_path / "swift", swift_ports())
    if not isinstance(outcome, SwiftServer):
        skip_or_fail("swift", outcome.reason)
    try:
        yield outcome
    finally:
        stop_swift(outcome.base)


def test_stopped_swift_gives_transient_error_after_retries(own_swift: SwiftServer) -> None:
    sleeps: list[float] = []
    swift = build_backend(make_swift_store_config(own_swift, timeout=2.0), sleep=sleeps.append)
    s3 = build_backend(make_s3_store_config(own_swift, connect_timeout=2.0), sleep=sleeps.append)
    key = f"{unique_container()}/b1/chunk"
    swift.put(key, b"before the stop")
    s3.put(f"{unique_container()}/x", b"s3 too")
    stop_swift(own_swift.base)

    for backend in (swift, s3):
        sleeps.clear()
        started = time.monotonic()
        with pytest.raises(TransientStorageError) as caught:
            backend.get(key)
        assert time.monotonic() - started < 10
        assert len(sleeps) == 4
        assert "gave up after 5 attempts" in caught.value.__notes__
        backend.close()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An HTTP endpoint that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_silent_swift_times_out_instead_of_hanging(silent_server: str) -> None:
    config = SwiftStoreConfig(
        name="silent",
        auth_url=f"{silent_server}/auth/v1.0",
        user="test:tester",
        key="testing",
        timeout=0.5,
    )
    backend = SwiftBackend(config)
    started = time.monotonic()
    with pytest.raises(TransientStorageError):
        backend.put("c/x", b"data")
    assert time.monotonic() - started < 5


def test_wrong_swift_key_gives_clear_auth_error(swift_server: SwiftServer) -> None:
    sleeps: list[float] = []
    config = make_swift_store_config(swift_server, key="wrong-secret-123")
    backend = build_backend(config, sleep=sleeps.append)
    with pytest.raises(StorageAuthError) as caught:
        backend.put(f"{config.default_container}/x", b"data")
    message = str(caught.value)
    assert "refused the credentials" in message and swift_server.user in message
    assert swift_server.auth_url in message
    assert "wrong-secret-123" not in message and "wrong-secret-123" not in repr(caught.value)
    assert sleeps == []


def test_wrong_s3_secret_gives_clear_auth_error(s3_server: SwiftServer) -> None:
    sleeps: list[float] = []
    config = make_s3_store_config(s3_server, secret_key="wrong-secret-456")
    backend = build_backend(config, sleep=sleeps.append)
    with pytest.raises(StorageAuthError) as caught:
        backend.put(f"{config.default_bucket}/x", b"data")
    message = str(caught.value)
    assert f"access key {s3_server.s3_access_key!r}" in message
    assert s3_server.s3_endpoint in message
    assert "wrong-secret-456" not in message
    assert sleeps == []
    backend.close()


def test_swift_threads_share_one_token_and_recover_from_expiry(
    swift_server: SwiftServer,
) -> None:
    config = make_swift_store_config(swift_server)
    backend = SwiftBackend(config)
    container = config.default_container
    backend.put(f"{container}/first", b"1")
    token = backend._shared_token
    assert token
    seen: list[str | None] = []

    def in_thread() -> None:
        seen.append(backend._connection().token)
        backend.put(f"{container}/second", b"2")

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen == [token]

    # An expired or revoked token: swiftclient authenticates again, once.
    backend._shared_token = "gAAAAexpired-token"
    assert backend.get(f"{container}/second") == b"2"
    assert backend._shared_token not in (None, "gAAAAexpired-token")
    backend.close()
