"""GET /v1.0/{project_id}/limits: Trove's absolute limits of the caller's project, then
Trove's rate entries.

Strongroom enforces no request rates (its edge bounds connections, threads per project and
body sizes instead). Clients expect the rate entries (``openstack database limit list``
prints them), so they carry Trove's documented defaults — 200 requests a minute per verb,
and 200 POSTs a minute under /mgmt — as information only: ``remaining`` is always the whole
``value`` and ``nextAvailable`` is now."""

from __future__ import annotations

from datetime import UTC, datetime

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
RATE = {
    "type": "object",
    "required": ["verb", "uri", "regex", "value", "remaining", "unit", "nextAvailable"],
    "properties": {
        "verb": {"enum": ["GET", "POST", "PUT", "DELETE"]},
        "uri": {"type": "string"},
        "regex": {"type": "string"},
        "value": {"type": "integer"},
        "remaining": {"type": "integer"},
        "unit": {"const": "MINUTE"},
        "nextAvailable": {"type": "string", "format": "date-time"},
    },
}
LIMITS = {
    "type": "object",
    "required": ["limits"],
    "properties": {"limits": {"type": "array", "items": {"anyOf": [ABSOLUTE, RATE]}}},
}
# Trove's DEFAULT_LIMITS with its default http_*_rate settings, in Trove's order.
TROVE_RATES = (
    ("POST", "*", ".*", 200),
    ("PUT", "*", ".*", 200),
    ("DELETE", "*", ".*", 200),
    ("GET", "*", ".*", 200),
    ("POST", "*/mgmt", "^/mgmt", 200),
)


def rate_entries(now: datetime) -> list[dict[str, object]]:
    next_available = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        {
            "verb": verb,
            "uri": uri,
            "regex": regex,
            "value": value,
            "remaining": value,  # nothing is counted against it
            "unit": "MINUTE",
            "nextAvailable": next_available,
        }
        for verb, uri, regex, value in TROVE_RATES
    ]


def quota_service(services: Services) -> QuotaService:
    quotas = services.quotas
    if quotas is None:
        raise RuntimeError("quotas are not configured")
    return quotas


@router.get(
    "/limits",
    summary="List the project's absolute limits (and Trove's rate entries, not enforced)",
    **operation(200, LIMITS),
)
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
    return JsonResponse({"limits": [absolute, *rate_entries(datetime.now(UTC))]})
