"""/v1.0/{project_id}/instances/{instance_id}/root: enable the datastore's root account
(its generated password is in this one response), say whether it was ever enabled, and
disable it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from strongroom.api.deps import json_body
from strongroom.api.openapi import operation
from strongroom.api.routes.account_calls import CallsDep
from strongroom.api.schemas import accounts as schemas
from strongroom.api.schemas.requests import validate

router = APIRouter(prefix="/v1.0/{project_id}/instances/{instance_id}/root")


def _optional_body(kwargs: dict[str, Any]) -> dict[str, Any]:
    """troveclient sends a body only when the caller chose root's password."""
    kwargs["openapi_extra"]["requestBody"]["required"] = False
    return kwargs


@router.post(
    "",
    summary="Enable root (with the password given, or a generated one)",
    **_optional_body(operation(200, schemas.ROOT_CREATED, 422, 501, body=schemas.ROOT_ENABLE)),
)
async def enable_root(project_id: str, instance_id: str, call: CallsDep) -> dict[str, Any]:
    # troveclient sends a body only with --root-password: none is no password.
    body = await json_body(call.request, empty={})
    validate(schemas.ROOT_ENABLE, body)
    password = body.get("password")
    name, password = await call("enable_root", instance_id=instance_id, password=password)
    return {"user": {"name": name, "password": password}}


@router.get("", summary="Was root ever enabled", **operation(200, schemas.ROOT_STATUS, 422, 501))
async def root_status(project_id: str, instance_id: str, call: CallsDep) -> dict[str, Any]:
    enabled = await call("root_enabled", instance_id=instance_id)
    return {"rootEnabled": enabled}


@router.delete("", summary="Disable root", **operation(200, None, 422, 501))
async def disable_root(project_id: str, instance_id: str, call: CallsDep) -> Response:
    await call("disable_root", instance_id=instance_id)
    return Response(status_code=200, media_type="application/json")
