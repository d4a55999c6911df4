"""/v1.0/{project_id}/backups and backup strategies: parse → one service call → view."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from strongroom.api import commands
from strongroom.api.deps import (
    ContextDep,
    ServicesDep,
    accepted_after,
    blocking,
    caller,
    int_param,
    json_body,
    read,
    truthy_param,
)
from strongroom.api.openapi import INSTANCE_ID, LIMIT, MARKER, PROJECT_ID, operation, query
from strongroom.api.rendering import JsonResponse
from strongroom.api.schemas import requests as schemas
from strongroom.api.schemas import responses as r
from strongroom.api.views import backup_view, next_link, strategy_view
from strongroom.services.backups import ListFilter, Page

router = APIRouter(prefix="/v1.0/{project_id}")


LIST_FILTERS = (
    INSTANCE_ID,
    query("datastore", {"type": "string"}, "datastore id or name"),
    PROJECT_ID,
    query("all_projects", {"type": "string"}, "truthy: every project's backups (admin only)"),
    LIMIT,
    MARKER,
)


def _page(request: Request, services: ServicesDep, page: Page) -> JsonResponse:
    body: dict[str, Any] = {"backups": [backup_view(b, services.datastores) for b in page.items]}
    if page.full:
        body["links"] = next_link(request, page.offset, page.limit)
    return JsonResponse(body)


@router.get(
    "/backups", summary="List backups", **operation(200, r.BACKUP_LIST, params=LIST_FILTERS)
)
async def list_backups(project_id: str, request: Request) -> JsonResponse:
    ctx, services = caller(request)
    q = request.query_params
    filters = ListFilter(
        instance_id=q.get("instance_id") or None,
        datastore=q.get("datastore") or None,
        project_id=q.get("project_id") or None,
        all_projects=truthy_param(request, "all_projects"),
        offset=int_param(request, "marker") or 0,
        limit=int_param(request, "limit"),
    )
    return _page(
        request, services, await read(services, services.backups.list, ctx, filters=filters)
    )


@router.post(
    "/backups",
    summary="Create a backup",
    **operation(
        202, r.BACKUP_SINGLE, 413, 422, 501, params=(LIMIT, MARKER), body=schemas.BACKUP_CREATE
    ),
)
async def create_backup(
    project_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> JsonResponse:
    body = await json_body(request)
    schemas.validate(schemas.BACKUP_CREATE, body)
    parent_page = (int_param(request, "marker") or 0, int_param(request, "limit"))
    command = commands.create_backup(body["backup"])
    backup = await blocking(
        request, ctx, services.backups.create, ctx, command=command, parent_page=parent_page
    )
    return JsonResponse({"backup": backup_view(backup, services.datastores)}, status_code=202)


@router.get("/backups/{backup_id}", summary="Show a backup", **operation(200, r.BACKUP_SINGLE))
async def show_backup(project_id: str, backup_id: str, request: Request) -> JsonResponse:
    ctx, services = caller(request)
    backup = await read(services, services.backups.get, ctx, backup_id=backup_id)
    return JsonResponse({"backup": backup_view(backup, services.datastores)})


@router.delete(
    "/backups/{backup_id}",
    summary="Delete a backup and its children",
    **operation(202, None, 422),
)
async def delete_backup(
    project_id: str, backup_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> Response:
    return await accepted_after(request, ctx, services.backups.delete, backup_id=backup_id)


@router.get(
    "/instances/{instance_id}/backups",
    summary="List an instance's backups",
    **operation(200, r.BACKUP_LIST, params=(LIMIT, MARKER)),
)
async def instance_backups(project_id: str, instance_id: str, request: Request) -> JsonResponse:
    ctx, services = caller(request)
    page = await read(
        services,
        services.backups.list_for_instance,
        ctx,
        instance_id=instance_id,
        offset=int_param(request, "marker") or 0,
        limit=int_param(request, "limit"),
    )
    return _page(request, services, page)


@router.post(
    "/backup_strategies",
    summary="Create or update a backup strategy",
    **operation(202, r.STRATEGY_SINGLE, body=schemas.STRATEGY_CREATE),
)
async def create_strategy(
    project_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> JsonResponse:
    body = await json_body(request)
    schemas.validate(schemas.STRATEGY_CREATE, body)
    spec = body["backup_strategy"]
    strategy = await blocking(
        request,
        ctx,
        services.backups.create_strategy,
        ctx,
        instance_id=spec.get("instance_id"),
        container=spec["swift_container"],
    )
    return JsonResponse({"backup_strategy": strategy_view(strategy)}, status_code=202)


@router.get(
    "/backup_strategies",
    summary="List backup strategies",
    **operation(200, r.STRATEGY_LIST, params=(INSTANCE_ID, PROJECT_ID)),
)
async def list_strategies(
    project_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    strategies = await read(
        services,
        services.backups.list_strategies,
        ctx,
        instance_id=request.query_params.get("instance_id"),
        project_id=request.query_params.get("project_id"),
    )
    return {"backup_strategies": [strategy_view(s) for s in strategies]}


@router.delete(
    "/backup_strategies",
    summary="Delete a backup strategy",
    **operation(202, None, params=(INSTANCE_ID, PROJECT_ID)),
)
async def delete_strategy(
    project_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> Response:
    return await accepted_after(
        request,
        ctx,
        services.backups.delete_strategy,
        instance_id=request.query_params.get("instance_id"),
        project_id=request.query_params.get("project_id"),
    )
