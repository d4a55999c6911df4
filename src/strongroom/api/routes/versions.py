"""Version discovery: no authentication."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from strongroom.api.openapi import operation
from strongroom.api.schemas import responses as r
from strongroom.api.views import base_url

router = APIRouter()
VERSION_DOC = operation(200, r.API_VERSION_SINGLE, public=True)


def _version(request: Request) -> dict[str, Any]:
    base = base_url(request)
    return {
        "id": "v1.0",
        "status": "CURRENT",
        "updated": "2012-08-01T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base}/v1.0/"}],
    }


@router.get("/", summary="List API versions", **operation(200, r.API_VERSION_LIST, public=True))
def versions(request: Request) -> dict[str, Any]:
    return {"versions": [_version(request)]}


@router.get("/v1.0", summary="Show API version v1.0", **VERSION_DOC)
@router.get("/v1.0/", summary="Show API version v1.0", **VERSION_DOC)
def version(request: Request) -> dict[str, Any]:
    return {"version": _version(request)}
