"""The ASGI application of `strongroom api`, built once per API worker process."""

from __future__ import annotations

from fastapi import FastAPI

from strongroom import logformat
from strongroom.allocator import freeze_startup_objects
from strongroom.api.app import create_app
from strongroom.bootstrap import build, edge_settings
from strongroom.config import Settings


def create() -> FastAPI:
    """Factory for uvicorn's worker processes: settings come from the environment and the
    config file (`strongroom api` exports its command-line values before starting them)."""
    logformat.configure()  # a worker process starts afresh: the service's log format again
    settings = Settings()
    container = build(settings, role="api")
    app = create_app(container.services, edge_settings(settings))
    freeze_startup_objects()
    return app
