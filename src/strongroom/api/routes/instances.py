"""/v1.0/{project_id}/instances and flavors."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from strongroom.api.deps import ContextDep, ServicesDep, int_param, json_body
from strongroom.api.schemas import requests as schemas
from strongroom.api.views import flavor_view, instance_view
from strongroom.domain.errors import ResourceNotFoundError

router = APIRouter(prefix="/v1.0/{project_id}")


@router.post(
    "/instances",
    status_code=200,
    summary="Create an instance (empty, external, or restored from a backup)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schemas.INSTANCE_CREATE}},
        }
    },
)
async def create_instance(
    project_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> JSONResponse:
    body = await json_body(request)
    schemas.validate(schemas.INSTANCE_CREATE, body)
    view = services.instances.create(ctx, request=body["instance"])
    return JSONResponse({"instance": instance_view(request, ctx, view, detail=True)})


@router.get("/instances", summary="List instances")
def list_instances(
    project_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    offset = int_param(request, "marker") or 0
    views = services.instances.list(ctx, offset=offset, limit=int_param(request, "limit"))
    return {"instances": [instance_view(request, ctx, v, detail=False) for v in views]}


@router.get("/instances/{instance_id}", summary="Show an instance")
def show_instance(
    project_id: str, instance_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    view = services.instances.get(ctx, instance_id=instance_id)
    return {"instance": instance_view(request, ctx, view, detail=True)}


@router.delete("/instances/{instance_id}", status_code=202, summary="Delete an instance")
def delete_instance(
    project_id: str, instance_id: str, ctx: ContextDep, services: ServicesDep
) -> Response:
    services.instances.delete(ctx, instance_id=instance_id)
    return Response(status_code=202, media_type="application/json")


@router.get("/flavors", summary="List flavors")
def list_flavors(
    project_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    return {"flavors": [flavor_view(request, ctx, f) for f in services.instances.flavors()]}


@router.get("/flavors/{flavor_id}", summary="Show a flavor")
def show_flavor(
    project_id: str, flavor_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    try:
        flavor = services.instances.flavor(flavor_id)
    except Exception as exc:
        raise ResourceNotFoundError(flavor_id) from exc
    return {"flavor": flavor_view(request, ctx, flavor)}
