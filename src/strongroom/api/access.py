"""One log line per request: client, method, path, status, milliseconds, project. Never a
header (tokens travel in X-Auth-Token), and query values whose names suggest a secret are
replaced by ``***``."""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.logformat import control_escaped

log = logging.getLogger("strongroom.access")

SECRET_WORDS = ("token", "password", "secret", "key", "auth")


def printable(text: str) -> str:
    """No line breaks or other control characters from a client into the log, and no
    ambiguity: a backslash is doubled and a quote escaped, so a client cannot write
    what reads as an escaped character or as the end of the quoted request."""
    if text.isprintable() and "\\" not in text and '"' not in text:  # nearly every path
        return text
    return "".join(_escaped(c) for c in text)


def _escaped(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char == '"':
        return "\\x22"
    return char if char.isprintable() else control_escaped(char)


def shown_query(raw: bytes) -> str:
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    hidden = [(k, "***" if any(w in k.lower() for w in SECRET_WORDS) else v) for k, v in pairs]
    return urlencode(hidden, safe="*")


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the application fails before it answers

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            if log.isEnabledFor(logging.INFO):
                self._log(scope, status, time.perf_counter() - started)

    @staticmethod
    def _log(scope: Scope, status: int, seconds: float) -> None:
        client = scope.get("client")
        path = scope.get("path", "")
        query = scope.get("query_string", b"")
        if query:
            path = f"{path}?{shown_query(query)}"
        ctx = scope.get("state", {}).get("ctx")
        log.info(
            '%s "%s %s" %d %.1f ms',
            client[0] if client else "-",
            scope.get("method", "-"),
            printable(path),
            status,
            seconds * 1000,
            extra={"project_id": ctx.project_id if ctx is not None else None},
        )
