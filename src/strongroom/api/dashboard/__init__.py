"""The web dashboard: server-rendered HTML (Jinja2), htmx vendored in ``static/``."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from strongroom.api.dashboard import routes
from strongroom.api.dashboard.sessions import SessionSigner
from strongroom.services.container import Services

PREFIX = "/dashboard"


def install(app: FastAPI, services: Services) -> None:
    app.state.dashboard_sessions = SessionSigner(services.session_key)
    app.state.dashboard_templates = routes.templates()
    app.include_router(routes.router)
    app.mount(
        f"{PREFIX}/static",
        StaticFiles(packages=[("strongroom.api.dashboard", "static")]),
        name="dashboard-static",
    )


def is_dashboard_path(path: str) -> bool:
    """Paths the dashboard authenticates itself (by its session cookie)."""
    return path == PREFIX or path.startswith(PREFIX + "/")
