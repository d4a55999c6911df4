"""/v1.0/{project_id}/datastores: open to every authenticated caller."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from strongroom.api.deps import ContextDep, ServicesDep
from strongroom.api.openapi import operation
from strongroom.api.schemas import responses as r
from strongroom.api.views import datastore_view, version_view

router = APIRouter(prefix="/v1.0/{project_id}")


@router.get("/datastores", summary="List datastores", **operation(200, r.DATASTORE_LIST))
def list_datastores(
    project_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    datastores = services.datastores.all(include_inactive=ctx.is_admin)
    return {"datastores": [datastore_view(request, ctx, d) for d in datastores]}


@router.get(
    "/datastores/versions/{version_id}",
    summary="Show a datastore version by id",
    **operation(200, r.VERSION_SINGLE),
)
def show_version_by_uuid(
    project_id: str, version_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    version = services.datastores.version_by_id(version_id)
    return {"version": version_view(request, ctx, version, with_datastore=True)}


@router.get(
    "/datastores/{datastore}", summary="Show a datastore", **operation(200, r.DATASTORE_SINGLE)
)
def show_datastore(
    project_id: str, datastore: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    ds = services.datastores.get(datastore, include_inactive=ctx.is_admin)
    return {"datastore": datastore_view(request, ctx, ds)}


@router.get(
    "/datastores/{datastore}/versions",
    summary="List a datastore's versions",
    **operation(200, r.VERSION_LIST),
)
def list_versions(
    project_id: str, datastore: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    ds = services.datastores.get(datastore, include_inactive=ctx.is_admin)
    return {"versions": [version_view(request, ctx, v, with_datastore=True) for v in ds.versions]}


@router.get(
    "/datastores/{datastore}/versions/{version}",
    summary="Show a datastore version",
    **operation(200, r.VERSION_SINGLE),
)
def show_version(
    project_id: str,
    datastore: str,
    version: str,
    request: Request,
    ctx: ContextDep,
    services: ServicesDep,
) -> dict[str, Any]:
    ds = services.datastores.get(datastore)
    found = services.datastores.version_in(ds, version)
    return {"version": version_view(request, ctx, found, with_datastore=True)}
