"""The ASGI application of `strongroom api` and `strongroom serve --workers N`, built once
per API process."""

from __future__ import annotations

import sys

from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE

from strongroom import logformat
from strongroom.allocator import freeze_startup_objects
from strongroom.api.app import create_app
from strongroom.api.server import stop_with_supervisor
from strongroom.bootstrap import Role, StartupError, build, edge_settings
from strongroom.config import Settings


def create() -> FastAPI:
    """Factory for uvicorn's worker processes: settings come from the environment and the
    config file (`strongroom api` exports its command-line values before starting them)."""
    return _create("api")


def create_serving() -> FastAPI:
    """Factory for the API processes of `strongroom serve --workers N`."""
    return _create("serving")


def _create(role: Role) -> FastAPI:
    logformat.configure()  # a worker process starts afresh: the service's log format again
    if not stop_with_supervisor():
        print("strongroom: the API's supervisor is gone; not starting", file=sys.stderr)
        sys.exit(0)
    settings = Settings()
    try:
        container = build(settings, role=role)
    except StartupError as exc:
        # One line, and an exit code that tells the supervisor not to start another
        # process that would fail the same way (``SocketPerProcess``).
        print(f"strongroom: cannot start: {exc}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
    app = create_app(container.services, edge_settings(settings))
    freeze_startup_objects()
    return app
