"""/v1.0/{project_id}/backup_schedules: parse → one service call → view.

Writes, runs and prunes (store round trips, retried) run as ``deps.blocking`` runs them: in
the caller's project's share of threads, never on the event loop nor in the shared pool."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from strongroom.api.deps import (
    ContextDep,
    ServicesDep,
    accepted_after,
    blocking,
    json_body,
    read,
    truthy_param,
)
from strongroom.api.openapi import INSTANCE_ID, operation, query
from strongroom.api.rendering import JsonResponse
from strongroom.api.schemas import requests as validation
from strongroom.api.schemas import schedules as schemas
from strongroom.api.schemas.responses import BACKUP_SINGLE
from strongroom.api.views import backup_view, prune_view, schedule_view
from strongroom.services.container import Services
from strongroom.services.schedules import ScheduleService

router = APIRouter(prefix="/v1.0/{project_id}")

DRY_RUN = query("dry_run", {"type": "string"}, "truthy: say what would be deleted, delete nothing")


def _schedules(services: Services) -> ScheduleService:
    if services.schedules is None:
        raise RuntimeError("backup schedules are not configured")
    return services.schedules


@router.post(
    "/backup_schedules",
    summary="Create a backup schedule",
    **operation(200, schemas.SCHEDULE_SINGLE, body=schemas.SCHEDULE_CREATE),
)
async def create_schedule(
    project_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> JsonResponse:
    body = await json_body(request)
    validation.validate(schemas.SCHEDULE_CREATE, body)
    schedule = await blocking(
        request, ctx, _schedules(services).create, ctx, spec=body["backup_schedule"]
    )
    return JsonResponse({"backup_schedule": schedule_view(schedule)})


@router.get(
    "/backup_schedules",
    summary="List backup schedules",
    **operation(200, schemas.SCHEDULE_LIST, params=(INSTANCE_ID,)),
)
async def list_schedules(
    project_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> JsonResponse:
    found = await read(
        services,
        _schedules(services).list,
        ctx,
        instance_id=request.query_params.get("instance_id") or None,
    )
    return JsonResponse({"backup_schedules": [schedule_view(s) for s in found]})


@router.get(
    "/backup_schedules/{schedule_id}",
    summary="Show a backup schedule",
    **operation(200, schemas.SCHEDULE_SINGLE),
)
async def show_schedule(
    project_id: str, schedule_id: str, ctx: ContextDep, services: ServicesDep
) -> JsonResponse:
    schedule = await read(services, _schedules(services).get, ctx, schedule_id=schedule_id)
    return JsonResponse({"backup_schedule": schedule_view(schedule)})


@router.put(
    "/backup_schedules/{schedule_id}",
    summary="Replace a backup schedule",
    **operation(200, schemas.SCHEDULE_SINGLE, body=schemas.SCHEDULE_CREATE),
)
async def replace_schedule(
    project_id: str, schedule_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> JsonResponse:
    body = await json_body(request)
    validation.validate(schemas.SCHEDULE_CREATE, body)
    schedule = await blocking(
        request,
        ctx,
        _schedules(services).replace,
        ctx,
        schedule_id=schedule_id,
        spec=body["backup_schedule"],
    )
    return JsonResponse({"backup_schedule": schedule_view(schedule)})


@router.delete(
    "/backup_schedules/{schedule_id}",
    summary="Delete a backup schedule (its backups stay)",
    **operation(202, None),
)
async def delete_schedule(
    project_id: str, schedule_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> Response:
    return await accepted_after(request, ctx, _schedules(services).delete, schedule_id=schedule_id)


@router.post(
    "/backup_schedules/{schedule_id}/run",
    summary="Run a backup schedule now",
    **operation(202, BACKUP_SINGLE, 413, 422, 501),
)
async def run_schedule(
    project_id: str, schedule_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> JsonResponse:
    backup = await blocking(
        request, ctx, _schedules(services).run_now, ctx, schedule_id=schedule_id
    )
    return JsonResponse({"backup": backup_view(backup, services.datastores)}, status_code=202)


@router.post(
    "/backup_schedules/{schedule_id}/prune",
    summary="Apply a schedule's retention policy (or, with dry_run, say what it would do)",
    **operation(200, schemas.PRUNE, params=(DRY_RUN,)),
)
async def prune_schedule(
    project_id: str, schedule_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> JsonResponse:
    dry_run = truthy_param(request, "dry_run")
    result = await blocking(
        request,
        ctx,
        _schedules(services).prune,
        ctx,
        schedule_id=schedule_id,
        dry_run=dry_run,
    )
    return JsonResponse(prune_view(result, dry_run=dry_run))
