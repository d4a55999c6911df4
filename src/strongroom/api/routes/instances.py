"""/v1.0/{project_id}/instances and flavors."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from strongroom.api import commands
from strongroom.api.deps import (
    ContextDep,
    ServicesDep,
    accepted_after,
    blocking,
    int_param,
    json_body,
    read,
)
from strongroom.api.openapi import LIMIT, MARKER, operation
from strongroom.api.rendering import JsonResponse
from strongroom.api.schemas import requests as schemas
from strongroom.api.schemas import responses as r
from strongroom.api.views import flavor_view, instance_view, pitr_view
from strongroom.domain.errors import ResourceNotFoundError
from strongroom.services.container import Services
from strongroom.services.pitr_policy import PitrService

router = APIRouter(prefix="/v1.0/{project_id}")
PITR_VIEW: dict[str, Any] = {
    "type": "object",
    "properties": {
        "restorable_window": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
            },
        },
        "pitr": {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean"},
                "last_archived_at": {"type": ["string", "null"]},
                "lag_seconds": {"type": ["number", "null"]},
            },
        },
    },
}


@router.post(
    "/instances",
    summary="Create an instance (empty, external, or restored from a backup)",
    **operation(200, r.INSTANCE_SINGLE, 409, 413, body=schemas.INSTANCE_CREATE),
)
async def create_instance(
    project_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> JsonResponse:
    body = await json_body(request)
    schemas.validate(schemas.INSTANCE_CREATE, body)
    command = commands.create_instance(body["instance"])
    view = await blocking(request, ctx, services.instances.create, ctx, command=command)
    return JsonResponse({"instance": instance_view(request, ctx, view, detail=True)})


@router.get(
    "/instances",
    summary="List instances",
    **operation(200, r.INSTANCE_LIST, params=(LIMIT, MARKER)),
)
async def list_instances(
    project_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    offset = int_param(request, "marker") or 0
    limit = int_param(request, "limit")
    views = await read(services, services.instances.list, ctx, offset=offset, limit=limit)
    return {"instances": [instance_view(request, ctx, v, detail=False) for v in views]}


@router.get(
    "/instances/{instance_id}", summary="Show an instance", **operation(200, r.INSTANCE_SINGLE)
)
async def show_instance(
    project_id: str, instance_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    view = await read(services, services.instances.get, ctx, instance_id=instance_id)
    return {"instance": instance_view(request, ctx, view, detail=True)}


@router.delete(
    "/instances/{instance_id}", summary="Delete an instance", **operation(202, None, 422)
)
async def delete_instance(
    project_id: str, instance_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> Response:
    return await accepted_after(request, ctx, services.instances.delete, instance_id=instance_id)


@router.put(
    "/instances/{instance_id}/pitr",
    summary="Turn point-in-time archiving of an instance on or off",
    **operation(200, PITR_VIEW, body={"type": "object"}),
)
async def update_pitr(
    project_id: str, instance_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    body = await json_body(request)
    service = _pitr(services)
    status = await blocking(request, ctx, service.update, ctx, instance_id=instance_id, body=body)
    return pitr_view(status)


@router.get(
    "/instances/{instance_id}/pitr",
    summary="Show an instance's point-in-time archiving and restorable window",
    **operation(200, PITR_VIEW),
)
async def show_pitr(
    project_id: str, instance_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    service = _pitr(services)
    return pitr_view(await read(services, service.show, ctx, instance_id=instance_id))


def _pitr(services: Services) -> PitrService:
    if services.pitr is None:
        raise ResourceNotFoundError("pitr")
    return services.pitr


@router.get("/flavors", summary="List flavors", **operation(200, r.FLAVOR_LIST))
def list_flavors(
    project_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    return {"flavors": [flavor_view(request, ctx, f) for f in services.instances.flavors()]}


@router.get("/flavors/{flavor_id}", summary="Show a flavor", **operation(200, r.FLAVOR_SINGLE))
def show_flavor(
    project_id: str, flavor_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    try:
        flavor = services.instances.flavor(flavor_id)
    except Exception as exc:
        raise ResourceNotFoundError(flavor_id) from exc
    return {"flavor": flavor_view(request, ctx, flavor)}
