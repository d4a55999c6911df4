"""Trove's quota management: GET / PUT /v1.0/{project_id}/mgmt/quotas/{tenant}.

GET lists each resource with in_use, reserved and limit (the project's own, or an admin's
view of any project); PUT sets limits and is the admin's (policy ``quota:update``)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from strongroom.api.deps import ContextDep, ServicesDep, blocking, json_body, read
from strongroom.api.openapi import operation
from strongroom.api.rendering import JsonResponse
from strongroom.api.routes.limits import quota_service
from strongroom.domain.errors import BadRequestError

router = APIRouter(prefix="/v1.0/{project_id}/mgmt")

INTEGER = {"type": "integer"}
QUOTA_LIST = {
    "type": "object",
    "required": ["quotas"],
    "properties": {
        "quotas": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["resource", "in_use", "reserved", "limit"],
                "properties": {
                    "resource": {"type": "string"},
                    "in_use": INTEGER,
                    "reserved": INTEGER,
                    "limit": INTEGER,
                },
            },
        }
    },
}
QUOTA_UPDATE = {
    "type": "object",
    "required": ["quotas"],
    "properties": {"quotas": {"type": "object", "additionalProperties": INTEGER}},
}


@router.get("/quotas/{tenant_id}", summary="Show a project's quotas", **operation(200, QUOTA_LIST))
async def show_quotas(
    project_id: str, tenant_id: str, ctx: ContextDep, services: ServicesDep
) -> JsonResponse:
    usage = await read(services, quota_service(services).show, ctx, tenant_id)
    return JsonResponse(
        {
            "quotas": [
                {
                    "resource": u.resource,
                    "in_use": u.in_use,
                    "reserved": u.reserved,
                    "limit": u.limit,
                }
                for u in usage
            ]
        }
    )


@router.put(
    "/quotas/{tenant_id}",
    summary="Set a project's quota limits (admin)",
    **operation(200, QUOTA_UPDATE, body=QUOTA_UPDATE),
)
async def update_quotas(
    project_id: str, tenant_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> JsonResponse:
    body = await json_body(request)
    if not isinstance(body, dict) or "quotas" not in body:
        raise BadRequestError("Validation error: the body needs a 'quotas' object.")
    updated = await blocking(
        request, ctx, quota_service(services).update, ctx, tenant_id, body["quotas"]
    )
    return JsonResponse({"quotas": updated})
