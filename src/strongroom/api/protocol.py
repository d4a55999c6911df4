"""The HTTP protocol of the server: uvicorn's (httptools), with the two bounds uvicorn
lacks. A connection must finish sending a request's headers within ``header_timeout``
(from its opening, or from the first byte of a later request), else it is closed: idle and
half-sent connections cannot pile up. Beyond ``max_connections`` open connections a new one
is closed at once, before any file descriptor runs out."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from strongroom.api.edge import EdgeSettings


class EdgeConfig(uvicorn.Config):
    """uvicorn's Config carrying the edge bounds to the protocol (and, pickled, to the
    worker processes of `strongroom api`)."""

    def __init__(self, app: Any, *, edge: EdgeSettings, **kwargs: Any) -> None:
        super().__init__(app, http=BoundedHttpProtocol, **kwargs)
        self.edge = edge


class BoundedHttpProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        edge = getattr(config, "edge", None) or EdgeSettings()
        self._header_timeout = edge.header_timeout
        self._max_connections = edge.max_connections
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            transport.abort()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self._header_timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def send_400_response(self, msg: str) -> None:
        """A request the parser refuses (a malformed header, say) gets a Trove fault, as any
        other bad request does, instead of uvicorn's plain-text answer; then the connection
        is closed, as uvicorn closes it."""
        body = json.dumps({"badRequest": {"code": 400, "message": msg}}).encode()
        head = [
            b"HTTP/1.1 400 Bad Request\r\n",
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
