"""POST /v1.0/{project_id}/backups/{backup_id}/verify: read a backup back from its store;
…/drill: restore it into a throwaway instance and check what came back."""

from __future__ import annotations

from fastapi import APIRouter, Request

from strongroom.api.deps import ContextDep, ServicesDep, blocking
from strongroom.api.openapi import operation
from strongroom.api.rendering import JsonResponse
from strongroom.api.schemas.responses import BACKUP_SINGLE
from strongroom.api.views import backup_view
from strongroom.domain.model import RequestContext
from strongroom.services.backup_checks import BackupCheckRequests
from strongroom.services.container import Services

router = APIRouter(prefix="/v1.0/{project_id}")


@router.post(
    "/backups/{backup_id}/verify",
    summary="Verify a backup: read, authenticate and decompress every object of its chain",
    **operation(202, BACKUP_SINGLE, 409, 413, 422),
)
async def verify_backup(
    project_id: str, backup_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> JsonResponse:
    return await _requested(
        request, services.verification, "verification", ctx, backup_id, services
    )


@router.post(
    "/backups/{backup_id}/drill",
    summary="Restore drill: restore into a throwaway instance, check the data, remove it",
    **operation(202, BACKUP_SINGLE, 409, 413, 422),
)
async def drill_backup(
    project_id: str, backup_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> JsonResponse:
    return await _requested(request, services.drills, "restore drills", ctx, backup_id, services)


async def _requested(
    request: Request,
    checks: BackupCheckRequests | None,
    what: str,
    ctx: RequestContext,
    backup_id: str,
    services: Services,
) -> JsonResponse:
    if checks is None:
        raise RuntimeError(f"{what} is not configured")
    # A write transaction: in the project's share of threads, off the event loop.
    backup = await blocking(request, ctx, checks.request, ctx, backup_id=backup_id)
    return JsonResponse({"backup": backup_view(backup, services.datastores)}, status_code=202)
