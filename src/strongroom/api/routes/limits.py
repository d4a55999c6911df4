"""GET /v1.0/{project_id}/limits: Trove's absolute limits of the caller's project.

Trove lists rate entries after the ABSOLUTE one; Strongroom enforces no request rates (its
edge bounds connections and threads instead), so it lists none rather than invent them."""

from __future__ import annotations

from fastapi import APIRouter

from strongroom.api.deps import ContextDep, ServicesDep, read
from strongroom.api.openapi import operation
from strongroom.api.rendering import JsonResponse
from strongroom.domain.quotas import UNLIMITED
from strongroom.services.container import Services
from strongroom.services.quotas import BACKUPS, INSTANCES, QuotaService

router = APIRouter(prefix="/v1.0/{project_id}")

ABSOLUTE = {
    "type": "object",
    "required": ["verb", "max_backups", "max_instances", "max_volumes"],
    "properties": {
        "verb": {"const": "ABSOLUTE"},
        "max_backups": {"type": "integer"},
        "max_instances": {"type": "integer"},
        "max_volumes": {"type": "integer"},
    },
}
LIMITS = {
    "type": "object",
    "required": ["limits"],
    "properties": {"limits": {"type": "array", "items": ABSOLUTE}},
}


def quota_service(services: Services) -> QuotaService:
    quotas = services.quotas
    if quotas is None:
        raise RuntimeError("quotas are not configured")
    return quotas


@router.get("/limits", summary="List the project's absolute limits", **operation(200, LIMITS))
async def list_limits(project_id: str, ctx: ContextDep, services: ServicesDep) -> JsonResponse:
    usage = await read(services, quota_service(services).limits, ctx)
    limit = {u.resource: u.limit for u in usage}
    in_use = {u.resource: u.in_use for u in usage}
    absolute = {
        "verb": "ABSOLUTE",
        "max_backups": limit[BACKUPS],
        "max_instances": limit[INSTANCES],
        "max_volumes": UNLIMITED,  # no total volume quota: only a per-instance size cap
        # Beyond Trove's fields: what counts against the limits now.
        "backups_in_use": in_use[BACKUPS],
        "instances_in_use": in_use[INSTANCES],
    }
    return JsonResponse({"limits": [absolute]})
