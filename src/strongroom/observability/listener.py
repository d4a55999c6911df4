"""The metrics listener: GET /metrics in Prometheus text format on its own address, in a
daemon thread (a WSGI server, as prometheus_client's own), never on the API port.

With ``metrics_token`` set, a scrape must carry it as a bearer token (401 otherwise): on a
host with managed servers, a tenant's programs reach every local address. Without it, the
listener needs none (see docs/monitoring.md). Any other path is 404.

It runs inside the service's process, so idle clients must not take its threads: each
connection is closed after ``CONNECTION_TIMEOUT`` seconds without traffic, and beyond
``MAX_CONNECTIONS`` open at once a new one is closed unserved, without a thread."""

from __future__ import annotations

import contextlib
import hmac
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from strongroom.observability import multiprocess

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]

CONNECTION_TIMEOUT = 10.0  # seconds a connection may stay silent (a scrape takes far less)
MAX_CONNECTIONS = 64  # connections served at once, one thread each; more are closed at once


def exposition_registry(
    *, own: CollectorRegistry | None, metadata: Collector | None
) -> CollectorRegistry:
    """What one listener shows: the values of every process writing to this process's
    multi-process directory (or, outside that mode, ``own``), plus the metadata series."""
    registry = CollectorRegistry(auto_describe=False)
    directory = multiprocess.active()
    if directory is not None:
        MultiProcessCollector(registry, path=str(directory))
    elif own is not None:
        registry.register(_Delegate(own))
    if metadata is not None:
        registry.register(metadata)
    return registry


class _Delegate(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Any]:
        return self._registry.collect()


def metrics_app(
    registry: CollectorRegistry, token: str | None = None
) -> Callable[[dict[str, Any], StartResponse], Any]:
    inner = make_wsgi_app(registry)
    expected = f"Bearer {token}".encode() if token else None

    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") not in (
            "GET",
            "HEAD",
        ):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"Not found: metrics are at /metrics\n"]
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        if expected is not None and not hmac.compare_digest(given, expected):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain; charset=utf-8"), ("WWW-Authenticate", "Bearer")],
            )
            return [b"Unauthorized: this listener needs its bearer token (metrics_token)\n"]
        directory = multiprocess.active()
        if directory is not None:
            multiprocess.forget_dead_processes(Path(directory))
        return inner(environ, start_response)

    return app


class _QuietHandler(WSGIRequestHandler):
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Bounds each read and write (not the whole exchange): a silent client is let go.
        self.connection.settimeout(self.server.connection_timeout)

    def handle(self) -> None:
        # Silent for too long: the connection is closed and its thread ends, unlogged.
        with contextlib.suppress(TimeoutError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every few seconds are not worth a log line each


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # A burst of connections waits in the kernel to be accepted (or closed), not in SYN
    # retries: the accepting thread shares the process's interpreter lock with busy threads.
    request_queue_size = MAX_CONNECTIONS

    def __init__(self, address: tuple[str, int], *, timeout: float, max_connections: int) -> None:
        super().__init__(address, _QuietHandler)
        self.connection_timeout = timeout
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # a flood: no thread for it, closed at once
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started to give the slot back
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsListener:
    """Bound at construction, before the service is built, so that a port in use is
    reported at once and alone; ``serve(registry)`` then answers scrapes until ``close``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        token: str | None = None,
        timeout: float = CONNECTION_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, port), timeout=timeout, max_connections=max_connections)
        self._server.set_app(_not_yet)
        self.port: int = self._server.server_port
        self._token = token
        self._thread: threading.Thread | None = None

    def serve(self, registry: CollectorRegistry) -> MetricsListener:
        self._server.set_app(metrics_app(registry, self._token))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-listener", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
        self._server.server_close()


def _not_yet(_environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting\n"]
