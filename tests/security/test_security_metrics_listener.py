"""The metrics listener runs inside the service's process: a flood of connections that never
finish their request takes at most ``MAX_CONNECTIONS`` threads (the rest are closed at
once), each idle connection is closed after the listener's timeout, and scrapes answer
again once the silent ones are let go."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from fixtures.service import wait_for
from strongroom.observability.listener import (
    MAX_CONNECTIONS,
    MetricsListener,
    exposition_registry,
)

FLOOD = MAX_CONNECTIONS + 86
HALF_SENT = b"GET /metrics HTTP/1.1\r\nHost: metr"  # a request that never ends


def _registry() -> CollectorRegistry:
    own = CollectorRegistry()
    Counter("strongroom_probe", "A series to scrape.", registry=own).inc()
    return exposition_registry(own=own, metadata=None)


def _serving(listener: MetricsListener) -> Iterator[MetricsListener]:
    listener.serve(_registry())
    try:
        yield listener
    finally:
        listener.close()


@pytest.fixture
def default_listener() -> Iterator[MetricsListener]:
    yield from _serving(MetricsListener("127.0.0.1", 0))


@pytest.fixture
def quick_listener() -> Iterator[MetricsListener]:
    yield from _serving(MetricsListener("127.0.0.1", 0, timeout=1.0))


class _Flood:
    """Connections sending a request line and part of a header, then nothing."""

    def __init__(self, port: int, count: int) -> None:
        self.sockets: list[socket.socket] = []
        self._closed: set[int] = set()
        for _ in range(count):
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            conn.sendall(HALF_SENT)
            conn.setblocking(False)  # looking for the server's close must not wait for it
            self.sockets.append(conn)

    def closed_by_server(self) -> int:
        for index, conn in enumerate(self.sockets):
            if index in self._closed:
                continue
            try:
                if conn.recv(1, socket.MSG_PEEK) == b"":
                    self._closed.add(index)
            except BlockingIOError:
                pass  # still open
            except OSError:
                self._closed.add(index)  # reset: closed with our bytes unread
        return len(self._closed)

    def close(self) -> None:
        for conn in self.sockets:
            conn.close()


def _scrape_status(listener: MetricsListener) -> int | None:
    try:
        answer = httpx.get(f"http://127.0.0.1:{listener.port}/metrics", timeout=2)
    except httpx.TransportError:
        return None  # closed unserved while the listener is full
    assert "strongroom_probe_total 1.0" in answer.text
    return answer.status_code


def test_a_flood_of_idle_connections_takes_a_bounded_number_of_threads(
    default_listener: MetricsListener,
) -> None:
    before = threading.active_count()
    flood = _Flood(default_listener.port, FLOOD)
    try:
        # Every connection accepted: either a thread holds it or it was closed at once.
        peak = 0

        def accounted() -> bool:
            nonlocal peak
            peak = max(peak, threading.active_count() - before)
            return peak + flood.closed_by_server() >= FLOOD

        wait_for(accounted, timeout=20)
        assert peak <= MAX_CONNECTIONS, f"{peak} threads for {FLOOD} idle connections"
        assert flood.closed_by_server() >= FLOOD - MAX_CONNECTIONS
    finally:
        flood.close()
    # The flood's clients gone, their threads end and scrapes answer.
    assert wait_for(lambda: _scrape_status(default_listener), timeout=5) == 200
    wait_for(lambda: threading.active_count() <= before, timeout=5)


def test_scrapes_answer_while_a_flood_stays_open(quick_listener: MetricsListener) -> None:
    before = threading.active_count()
    flood = _Flood(quick_listener.port, FLOOD)
    try:
        started = time.monotonic()
        assert wait_for(lambda: _scrape_status(quick_listener), timeout=5) == 200
        assert time.monotonic() - started < 5
        # Every one of them, each once idle past the timeout, and their threads with them.
        wait_for(lambda: flood.closed_by_server() == FLOOD, timeout=5)
        wait_for(lambda: threading.active_count() <= before, timeout=5)
    finally:
        flood.close()


def test_an_idle_connection_is_closed_after_the_timeout(quick_listener: MetricsListener) -> None:
    before = threading.active_count()
    with socket.create_connection(("127.0.0.1", quick_listener.port), timeout=10) as conn:
        conn.sendall(HALF_SENT)
        started = time.monotonic()
        wait_for(lambda: threading.active_count() > before, timeout=5)  # being served
        assert conn.recv(1) == b""  # closed by the server, nothing sent
        waited = time.monotonic() - started
    assert 0.8 <= waited < 5, waited
    wait_for(lambda: threading.active_count() <= before, timeout=5)
