"""/v1.0/{project_id}/instances/{instance_id}/users…: Trove's users of a managed instance
and their access to databases."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from strongroom.api.account_views import page, user_and_host, user_specs, user_view
from strongroom.api.deps import ContextDep, ServicesDep, blocking, int_param, json_body
from strongroom.api.openapi import LIMIT, MARKER, operation
from strongroom.api.schemas import accounts as schemas
from strongroom.api.schemas.requests import validate
from strongroom.services.account_relay import RelayedAccounts
from strongroom.services.accounts import AccountService, UserChanges
from strongroom.services.container import Services

router = APIRouter(prefix="/v1.0/{project_id}/instances/{instance_id}/users")


def accounts_of(services: Services) -> AccountService | RelayedAccounts:
    if services.accounts is None:
        raise RuntimeError("user and database management is not configured")
    return services.accounts


def accepted() -> Response:
    return Response(status_code=202, media_type="application/json")


@router.get(
    "",
    summary="List an instance's users",
    **operation(200, schemas.USER_LIST, 422, 501, params=(LIMIT, MARKER)),
)
async def list_users(
    project_id: str, instance_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> dict[str, Any]:
    offset, limit = int_param(request, "marker") or 0, int_param(request, "limit")
    users = await blocking(
        request, ctx, accounts_of(services).list_users, ctx, instance_id=instance_id
    )
    return page(request, "users", [user_view(u) for u in users], offset, limit)


@router.post(
    "",
    summary="Create users",
    **operation(202, None, 422, 501, body=schemas.USERS_CREATE),
)
async def create_users(
    project_id: str, instance_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> Response:
    body = await json_body(request)
    validate(schemas.USERS_CREATE, body)
    await blocking(
        request,
        ctx,
        accounts_of(services).create_users,
        ctx,
        instance_id=instance_id,
        users=user_specs(body["users"]),
    )
    return accepted()


@router.put(
    "",
    summary="Change users' passwords",
    **operation(202, None, 422, 501, body=schemas.USERS_UPDATE_ALL),
)
async def change_passwords(
    project_id: str, instance_id: str, request: Request, ctx: ContextDep, services: ServicesDep
) -> Response:
    body = await json_body(request)
    validate(schemas.USERS_UPDATE_ALL, body)
    await blocking(
        request,
        ctx,
        accounts_of(services).change_passwords,
        ctx,
        instance_id=instance_id,
        users=user_specs(body["users"]),
    )
    return accepted()


@router.get("/{user_id}", summary="Show a user", **operation(200, schemas.USER_SINGLE, 422, 501))
async def show_user(
    project_id: str,
    instance_id: str,
    user_id: str,
    request: Request,
    ctx: ContextDep,
    services: ServicesDep,
) -> dict[str, Any]:
    name, host = user_and_host(user_id)
    user = await blocking(
        request,
        ctx,
        accounts_of(services).get_user,
        ctx,
        instance_id=instance_id,
        name=name,
        host=host,
    )
    return {"user": user_view(user)}


@router.put(
    "/{user_id}",
    summary="Change a user's name, host or password",
    **operation(202, None, 422, 501, body=schemas.USER_UPDATE),
)
async def update_user(
    project_id: str,
    instance_id: str,
    user_id: str,
    request: Request,
    ctx: ContextDep,
    services: ServicesDep,
) -> Response:
    body = await json_body(request)
    validate(schemas.USER_UPDATE, body)
    name, host = user_and_host(user_id)
    attributes = body["user"]
    changes = UserChanges(
        attributes.get("name"), attributes.get("host"), attributes.get("password")
    )
    await blocking(
        request,
        ctx,
        accounts_of(services).update_user,
        ctx,
        instance_id=instance_id,
        name=name,
        host=host,
        changes=changes,
    )
    return accepted()


@router.delete("/{user_id}", summary="Delete a user", **operation(202, None, 422, 501))
async def delete_user(
    project_id: str,
    instance_id: str,
    user_id: str,
    request: Request,
    ctx: ContextDep,
    services: ServicesDep,
) -> Response:
    name, host = user_and_host(user_id)
    await blocking(
        request,
        ctx,
        accounts_of(services).delete_user,
        ctx,
        instance_id=instance_id,
        name=name,
        host=host,
    )
    return accepted()


@router.get(
    "/{user_id}/databases",
    summary="List the databases a user can reach",
    **operation(200, schemas.DATABASE_LIST, 422, 501),
)
async def list_access(
    project_id: str,
    instance_id: str,
    user_id: str,
    request: Request,
    ctx: ContextDep,
    services: ServicesDep,
) -> dict[str, Any]:
    name, host = user_and_host(user_id)
    databases = await blocking(
        request,
        ctx,
        accounts_of(services).user_databases,
        ctx,
        instance_id=instance_id,
        name=name,
        host=host,
    )
    return {"databases": [{"name": db} for db in databases]}


@router.put(
    "/{user_id}/databases",
    summary="Grant a user access to databases",
    **operation(202, None, 422, 501, body=schemas.USER_ACCESS_UPDATE),
)
async def grant_access(
    project_id: str,
    instance_id: str,
    user_id: str,
    request: Request,
    ctx: ContextDep,
    services: ServicesDep,
) -> Response:
    body = await json_body(request)
    validate(schemas.USER_ACCESS_UPDATE, body)
    name, host = user_and_host(user_id)
    await blocking(
        request,
        ctx,
        accounts_of(services).grant,
        ctx,
        instance_id=instance_id,
        name=name,
        host=host,
        databases=[str(d["name"]) for d in body["databases"]],
    )
    return accepted()


@router.delete(
    "/{user_id}/databases/{database}",
    summary="Revoke a user's access to a database",
    **operation(202, None, 422, 501),
)
async def revoke_access(
    project_id: str,
    instance_id: str,
    user_id: str,
    database: str,
    request: Request,
    ctx: ContextDep,
    services: ServicesDep,
) -> Response:
    name, host = user_and_host(user_id)
    await blocking(
        request,
        ctx,
        accounts_of(services).revoke,
        ctx,
        instance_id=instance_id,
        name=name,
        host=host,
        database=database,
    )
    return accepted()
