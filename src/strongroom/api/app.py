"""create_app(services) → the FastAPI application: auth, routers, one error path."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from strongroom.api import openapi
from strongroom.api.deps import UnsupportedMediaTypeError
from strongroom.api.errors import domain_fault, fault, unauthorized, unexpected_fault
from strongroom.api.routes import backups, datastores, instances, versions
from strongroom.domain.errors import DomainError
from strongroom.services.container import Services

PUBLIC_PATHS = {"/", "/v1.0", "/v1.0/", "/openapi.json", "/docs", "/docs/oauth2-redirect"}
PROJECT_PATH = re.compile(r"^/v1\.0/([^/]+)(/|$)")


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="Strongroom",
        version="1.0",
        description="Database backups behind the OpenStack Trove Backups API (v1.0).",
        redoc_url=None,
    )
    app.state.services = services
    for module in (versions, backups, instances, datastores):
        app.include_router(module.router)
    openapi.install(app)

    @app.middleware("http")
    async def authenticate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Token (401), then URL project = token project (403), before routing (§1.3)."""
        path = request.url.path
        if path in PUBLIC_PATHS:
            return await call_next(request)
        token = request.headers.get("x-auth-token")
        # A database lookup when not cached: off the event loop, like the route handlers.
        ctx = services.tokens.cached(token) or await run_in_threadpool(
            services.tokens.authenticate, token
        )
        if ctx is None:
            return unauthorized()
        match = PROJECT_PATH.match(path)
        if match is None or match.group(1) != ctx.project_id:
            return fault(403, f"User with tenant id {ctx.project_id} cannot access this resource.")
        request.state.ctx = ctx
        try:
            return await call_next(request)
        except Exception as exc:  # errors raised outside route handlers
            return unexpected_fault(exc)

    @app.exception_handler(DomainError)
    async def on_domain_error(_request: Request, exc: DomainError) -> Response:
        if isinstance(exc, UnsupportedMediaTypeError):
            return fault(415, str(exc), "badMediaType")
        return domain_fault(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (404, 405):
            return fault(404, "The resource could not be found.", "itemNotFound")
        return fault(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def on_unexpected(_request: Request, exc: Exception) -> Response:
        return unexpected_fault(exc)

    return app
