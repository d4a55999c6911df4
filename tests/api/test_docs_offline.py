"""/docs works offline: Swagger UI's assets are served by the service, no CDN is named."""

from __future__ import annotations

import re

from fixtures.service import Harness


def test_docs_page_loads_its_assets_from_the_service(harness: Harness) -> None:
    page = harness.client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert urls and all(u.startswith("/docs/assets/") for u in urls), urls
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    for url in urls:
        asset = harness.client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
    assert harness.client.get("/openapi.json").status_code == 200


def test_only_the_known_assets_are_served(harness: Harness) -> None:
    for path in ("/docs/assets/../../etc/passwd", "/docs/assets/index.html", "/docs/assets/"):
        assert harness.client.get(path).status_code in (401, 404)
