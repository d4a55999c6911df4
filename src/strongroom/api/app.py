"""create_app(services) → the FastAPI application: auth, routers, one error path."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator

from anyio import to_thread
from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from strongroom.api import dashboard, docs, openapi
from strongroom.api.access import AccessLogMiddleware
from strongroom.api.auth import AuthenticationMiddleware
from strongroom.api.blocking import BlockingCalls, ServiceBusyError
from strongroom.api.deps import BodyTimeoutError, UnsupportedMediaTypeError
from strongroom.api.edge import EdgeSettings
from strongroom.api.errors import domain_fault, fault, unexpected_fault
from strongroom.api.health import HealthEndpoints, mark_draining_on_signals
from strongroom.api.routes import (
    backups,
    copies,
    databases,
    datastores,
    instances,
    limits,
    quotas,
    root,
    schedules,
    users,
    verification,
    versions,
)
from strongroom.domain.errors import DomainError
from strongroom.services.container import Services

log = logging.getLogger(__name__)


def create_app(services: Services, edge: EdgeSettings | None = None) -> FastAPI:
    edge = edge or EdgeSettings()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Handlers that block (writes; reads of a metadata database across the network)
        # run in anyio's thread pool, 40 threads by default. More threads than pooled
        # database connections only open and close connections, and take turns at the GIL.
        to_thread.current_default_thread_limiter().total_tokens = services.request_threads
        if services.health is not None:
            mark_draining_on_signals(services.health)
        # One line per serving process: with several (`--workers`), the operator and the
        # benchmark can tell when every one of them takes requests.
        log.info("API process %d ready", os.getpid())
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="Strongroom",
        version="1.0",
        description="Database backups behind the OpenStack Trove Backups API (v1.0).",
        redoc_url=None,
        docs_url=None,  # served by api.docs, without a CDN
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.services = services
    app.state.edge = edge
    app.state.blocking = BlockingCalls(
        threads=edge.blocking_threads,
        per_project=edge.blocking_threads_per_project,
        wait_seconds=edge.blocking_wait_seconds,
    )
    # The routers' routes (their paths carry the prefix) go into the application's own
    # route list: an included router is matched again at each level it is included at
    # (three matches a request), which cost a tenth of a one-backup request's CPU. So
    # ``app.dependency_overrides`` does not reach them (nothing here overrides), and they
    # are all in place before the OpenAPI document is first built.
    for module in (versions, backups, instances, datastores):
        app.router.routes.extend(module.router.routes)
    for module in (schedules, verification, copies, users, databases, root, limits, quotas):
        app.router.routes.extend(module.router.routes)
    openapi.install(app)
    docs.install(app)
    dashboard.install(app, services)

    app.add_middleware(AuthenticationMiddleware, services=services)
    # Outside authentication: probes carry no token.
    app.add_middleware(HealthEndpoints, health=services.health)
    if edge.access_log:
        app.add_middleware(AccessLogMiddleware)  # outermost: refused requests are logged too

    @app.exception_handler(DomainError)
    async def on_domain_error(_request: Request, exc: DomainError) -> Response:
        if isinstance(exc, UnsupportedMediaTypeError):
            return fault(415, str(exc), "badMediaType")
        if isinstance(exc, BodyTimeoutError):
            return fault(408, str(exc), "badRequest")
        return domain_fault(exc)

    @app.exception_handler(ServiceBusyError)
    async def on_busy(_request: Request, exc: ServiceBusyError) -> Response:
        response = fault(503, str(exc), "serviceUnavailable")
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (404, 405):
            return fault(404, "The resource could not be found.", "itemNotFound")
        return fault(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def on_unexpected(_request: Request, exc: Exception) -> Response:
        return unexpected_fault(exc)

    return app
