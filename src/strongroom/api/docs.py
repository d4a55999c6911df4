"""/docs: Swagger UI, its assets served from the installed package (fastapi-offline ships
them), so the page works without reaching a CDN."""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

ASSETS = "/docs/assets"
MEDIA_TYPES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}
PUBLIC_PATHS = {"/docs", *(f"{ASSETS}/{name}" for name in MEDIA_TYPES)}


def install(app: FastAPI) -> None:
    static = files("fastapi_offline") / "static"
    # Read once at start: three fixed files, never a path from the request.
    assets = {name: (static / name).read_bytes() for name in MEDIA_TYPES}

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )

    for name, body in assets.items():

        async def asset(body: bytes = body, media: str = MEDIA_TYPES[name]) -> Response:
            return Response(body, media_type=media, headers={"Cache-Control": "max-age=86400"})

        app.add_api_route(f"{ASSETS}/{name}", asset, methods=["GET"], include_in_schema=False)
