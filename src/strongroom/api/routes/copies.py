"""POST /v1.0/{project_id}/backups/{backup_id}/copy: copy a backup (and its chain) into
another named store."""

from __future__ import annotations

from fastapi import APIRouter, Request

from strongroom.api.deps import ContextDep, ServicesDep, blocking, json_body
from strongroom.api.openapi import operation
from strongroom.api.rendering import JsonResponse
from strongroom.api.schemas import requests as schemas
from strongroom.api.schemas.responses import BACKUP_SINGLE
from strongroom.api.views import backup_view

router = APIRouter(prefix="/v1.0/{project_id}")


@router.post(
    "/backups/{backup_id}/copy",
    summary="Copy a backup and its chain into another store, then verify the copy",
    **operation(202, BACKUP_SINGLE, 409, 422, body=schemas.COPY_CREATE),
)
async def copy_backup(
    project_id: str, backup_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> JsonResponse:
    if services.copies is None:
        raise RuntimeError("copies are not configured")
    body = await json_body(request)
    schemas.validate(schemas.COPY_CREATE, body)
    backup = await blocking(
        request, ctx, services.copies.request, ctx, backup_id=backup_id, spec=body["copy"]
    )
    return JsonResponse({"backup": backup_view(backup, services.datastores)}, status_code=202)
