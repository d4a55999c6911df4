"""/v1.0/{project_id}/instances/{instance_id}/databases…: Trove's databases of a managed
instance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from strongroom.api.account_views import database_specs, database_view, page
from strongroom.api.deps import ContextDep, ServicesDep, blocking, int_param, json_body
from strongroom.api.openapi import LIMIT, MARKER, operation
from strongroom.api.routes.users import accepted, accounts_of
from strongroom.api.schemas import accounts as schemas
from strongroom.api.schemas.requests import validate

router = APIRouter(prefix="/v1.0/{project_id}/instances/{instance_id}/databases")


@router.get(
    "",
    summary="List an instance's databases",
    **operation(200, schemas.DATABASE_LIST, 422, 501, params=(LIMIT, MARKER)),
)
async def list_databases(
    project_id: str, instance_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    offset, limit = int_param(request, "marker") or 0, int_param(request, "limit")
    names = await blocking(
        request, ctx, accounts_of(services).list_databases, ctx, instance_id=instance_id
    )
    return page(request, "databases", [database_view(n) for n in names], offset, limit)


@router.post(
    "", summary="Create databases", **operation(202, None, 422, 501, body=schemas.DATABASES_CREATE)
)
async def create_databases(
    project_id: str, instance_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> Response:
    body = await json_body(request)
    validate(schemas.DATABASES_CREATE, body)
    await blocking(
        request,
        ctx,
        accounts_of(services).create_databases,
        ctx,
        instance_id=instance_id,
        databases=database_specs(body["databases"]),
    )
    return accepted()


@router.get(
    "/{database}",
    summary="Show a database: Trove answers 501 (clients list the databases instead)",
    **operation(200, None, 422, 501),
)
async def show_database(
    project_id: str,
    instance_id: str,
    database: str,
    request: Request,
    ctx: ContextDep,
    services: ServicesDep,
) -> Response:
    await blocking(
        request,
        ctx,
        accounts_of(services).show_database,
        ctx,
        instance_id=instance_id,
        name=database,
    )
    return accepted()  # not reached: the service answers 501


@router.delete("/{database}", summary="Delete a database", **operation(202, None, 422, 501))
async def delete_database(
    project_id: str,
    instance_id: str,
    database: str,
    request: Request,
    ctx: ContextDep,
    services: ServicesDep,
) -> Response:
    await blocking(
        request,
        ctx,
        accounts_of(services).delete_database,
        ctx,
        instance_id=instance_id,
        name=database,
    )
    return accepted()
