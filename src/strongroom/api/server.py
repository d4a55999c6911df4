"""Serving the application with uvicorn: in this process (`serve`) or in worker processes
(`api`), with the same HTTP settings."""

from __future__ import annotations

import errno
import logging
import resource
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from strongroom.api.edge import EdgeSettings
from strongroom.api.protocol import EdgeConfig

log = logging.getLogger(__name__)

# asyncio's own event loop rather than uvloop: under 32 keep-alive clients uvloop served
# the connections unevenly, a p99 five times the median at the same throughput (seen with
# a bare ASGI app as well), where asyncio's loop keeps the p99 within about 10 %.
# No proxy headers: a client must not choose the scheme or the address the service sees.
HTTP_SETTINGS: dict[str, Any] = {
    "log_level": "warning",
    "timeout_keep_alive": 5,
    "loop": "asyncio",
    "proxy_headers": False,
    "server_header": False,
    "log_config": None,  # the service's own log format (strongroom.logformat)
    "access_log": False,  # api.access writes one line per request, without tokens
}


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit (connections are files);
    returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, wanted, exc)
        return soft
    return wanted


class ListenError(Exception):
    """The address cannot be listened on; the message says why in one line."""


def listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket for ``host:port`` (IPPROTO_TCP, so that accepted connections get
    TCP_NODELAY; see ``tcp_listener``). Bound before anything else starts, so a port in use
    is reported at once and alone."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"port {port} on {host} is already in use") from None
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def serve_app(app: FastAPI, *, listener: socket.socket, edge: EdgeSettings | None = None) -> None:
    raise_open_file_limit()
    host, port = listener.getsockname()[:2]
    config = EdgeConfig(app, edge=edge or EdgeSettings(), host=host, port=port, **HTTP_SETTINGS)
    uvicorn.Server(config).run(sockets=[listener])


def serve_workers(
    factory: str, *, listener: socket.socket, workers: int, edge: EdgeSettings | None = None
) -> None:
    """``factory`` (``module:function``) builds the application in each worker process."""
    raise_open_file_limit()  # inherited by the worker processes
    host, port = listener.getsockname()[:2]
    config = EdgeConfig(
        factory,
        edge=edge or EdgeSettings(),
        factory=True,
        host=host,
        port=port,
        workers=workers,
        **HTTP_SETTINGS,
    )
    if workers > 1:
        Multiprocess(config, sockets=[listener]).run()
    else:
        uvicorn.Server(config).run(sockets=[listener])


def tcp_listener(sock: socket.socket) -> socket.socket:
    """The same listening descriptor, with its protocol recorded as TCP.

    uvicorn binds the socket it shares with its workers with protocol 0. Accepted
    connections inherit that, and asyncio sets TCP_NODELAY only on sockets that say
    IPPROTO_TCP, so Nagle's algorithm stayed on and every keep-alive response waited for
    the client's delayed ACK: 44 ms per request (uvicorn issue #3149)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.proto:
        return sock
    labelled = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
    labelled.set_inheritable(True)
    return labelled
