"""GET /healthcheck and GET /readyz, answered before authentication (no token).

* /healthcheck answers as oslo.middleware's healthcheck does: 200 ``OK`` in plain text
  while the process serves, 503 once it has begun to shut down (so a load balancer stops
  sending it requests); /health is the same.
* /readyz checks the metadata database and every store, each bounded by
  ``readiness_timeout``, in threads of its own (never on the event loop, never waiting
  behind request handlers): 200 or 503 with each part's state, reasons without secrets.
* /metrics is not served here: it has its own listener (metrics_port)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from anyio import CapacityLimiter, to_thread
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from strongroom.api.errors import fault
from strongroom.services.health import Health

LIVENESS_PATHS = frozenset({"/healthcheck", "/health"})
READINESS_PATH = "/readyz"
METRICS_PATH = "/metrics"


class HealthEndpoints:
    def __init__(self, app: ASGIApp, *, health: Health | None) -> None:
        self.app = app
        self.health = health
        self._limiter: CapacityLimiter | None = None  # made on the event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path in LIVENESS_PATHS:
            response = self._liveness(scope)
        elif path == READINESS_PATH:
            response = await self._readiness(scope)
        elif path == METRICS_PATH:
            response = fault(
                404,
                "Metrics are served on the metrics port (setting metrics_port).",
                "itemNotFound",
            )
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)

    def _liveness(self, scope: Scope) -> Response:
        if scope["method"] not in ("GET", "HEAD"):
            return PlainTextResponse("Method Not Allowed", status_code=405)
        if self.health is not None and self.health.draining.is_set():
            return PlainTextResponse("SHUTTING DOWN", status_code=503)
        return PlainTextResponse("OK")

    async def _readiness(self, scope: Scope) -> Response:
        if scope["method"] not in ("GET", "HEAD"):
            return PlainTextResponse("Method Not Allowed", status_code=405)
        if self.health is None:
            return JSONResponse({"metadata": "not checked", "stores": {}}, status_code=503)
        if self.health.draining.is_set():
            return JSONResponse({"metadata": "shutting down", "stores": {}}, status_code=503)
        if self._limiter is None:
            # Two probes at once at most; the rest wait their turn (each is time-bounded).
            self._limiter = CapacityLimiter(2)
        report = await to_thread.run_sync(self.health.readiness, limiter=self._limiter)
        body = {"metadata": report.metadata, "stores": report.stores}
        return JSONResponse(body, status_code=200 if report.ready else 503)


def mark_draining_on_signals(health: Health) -> None:
    """Chain to the SIGTERM/SIGINT handlers uvicorn installed: set ``health.draining``
    first. Only the main thread can do this (not under a test client); uvicorn restores
    its own handlers' predecessors when it stops."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue
        signal.signal(sig, _chained(health, previous))


def _chained(health: Health, previous: Callable[[int, FrameType | None], Any]) -> Any:
    def handler(signum: int, frame: FrameType | None) -> None:
        health.draining.set()
        previous(signum, frame)

    return handler
