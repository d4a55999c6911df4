"""Authentication as plain ASGI middleware: token (401), then URL project = token project
(403), before routing.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``: that one runs every request's
downstream app in a second task behind memory streams, which cost more than the list query
itself under concurrent load."""

from __future__ import annotations

import logging
import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.api import dashboard, docs
from strongroom.api.deps import read
from strongroom.api.errors import fault, unauthorized, unexpected_fault
from strongroom.api.keystone import KeystoneUnavailable
from strongroom.domain.model import RequestContext
from strongroom.services.container import Services

_log = logging.getLogger(__name__)

PUBLIC_PATHS = {"/", "/v1.0", "/v1.0/", "/openapi.json", *docs.PUBLIC_PATHS}
PROJECT_PATH = re.compile(r"^/v1\.0/([^/]+)(/|$)")


def has_nul(scope: Scope) -> bool:
    """A NUL in the path or the query: no metadata database stores it in text."""
    query: bytes = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"\x00" in query or b"%00" in query


class AuthenticationMiddleware:
    def __init__(self, app: ASGIApp, *, services: Services) -> None:
        self.app = app
        self.services = services

    async def authenticate(self, token: str | None) -> RequestContext | None:
        """The embedded token store first (a metadata read when not cached, run where the
        route handlers run theirs), then Keystone when configured."""
        tokens, external = self.services.tokens, self.services.external_tokens
        ctx = tokens.cached(token)
        if ctx is None and external is not None and token:
            ctx = external.cached(token)  # a validated Keystone token: no metadata read
            if ctx is None and external.refused(token):
                return None  # refused by both moments ago: neither a read nor a Keystone call
        if ctx is None:
            ctx = await read(self.services, tokens.authenticate, token)
        if ctx is None and external is not None and token:
            ctx = await external.authenticate(token)
        return ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and has_nul(scope):
            refused = fault(400, "The URL contains a NUL character (U+0000).", "badRequest")
            await refused(scope, receive, send)
            return
        if (
            scope["type"] != "http"
            or scope["path"] in PUBLIC_PATHS
            or dashboard.is_dashboard_path(scope["path"])  # signs in by its own session
        ):
            await self.app(scope, receive, send)
            return
        token = Headers(scope=scope).get("x-auth-token")
        try:
            ctx = await self.authenticate(token)
        except KeystoneUnavailable as exc:
            _log.warning("token not validated: %s", exc)
            unavailable = fault(503, "The identity service is unavailable; try again later.")
            await unavailable(scope, receive, send)
            return
        if ctx is None:
            await unauthorized()(scope, receive, send)
            return
        match = PROJECT_PATH.match(scope["path"])
        if match is None or match.group(1) != ctx.project_id:
            forbidden = fault(
                403, f"User with tenant id {ctx.project_id} cannot access this resource."
            )
            await forbidden(scope, receive, send)
            return
        scope.setdefault("state", {})["ctx"] = ctx  # what ``request.state.ctx`` reads
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # errors raised outside route handlers
            if started:
                raise
            await unexpected_fault(exc)(scope, receive, send)
