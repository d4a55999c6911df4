"""/v1.0/{project_id}/instances/{instance_id}/users…: Trove's users of a managed instance
and their access to databases."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from strongroom.api.account_views import page, user_and_host, user_specs, user_view
from strongroom.api.deps import int_param
from strongroom.api.openapi import LIMIT, MARKER, operation
from strongroom.api.routes.account_calls import CallsDep, accepted
from strongroom.api.schemas import accounts as schemas
from strongroom.services.accounts import UserChanges

router = APIRouter(prefix="/v1.0/{project_id}/instances/{instance_id}/users")


@router.get(
    "",
    summary="List an instance's users",
    **operation(200, schemas.USER_LIST, 422, 501, params=(LIMIT, MARKER)),
)
async def list_users(project_id: str, instance_id: str, call: CallsDep) -> dict[str, Any]:
    offset, limit = int_param(call.request, "marker") or 0, int_param(call.request, "limit")
    users = await call("list_users", instance_id=instance_id)
    return page(call.request, "users", [user_view(u) for u in users], offset, limit)


@router.post(
    "", summary="Create users", **operation(202, None, 422, 501, body=schemas.USERS_CREATE)
)
async def create_users(project_id: str, instance_id: str, call: CallsDep) -> Response:
    users = user_specs((await call.body(schemas.USERS_CREATE))["users"])
    await call("create_users", instance_id=instance_id, users=users)
    return accepted()


@router.put(
    "",
    summary="Change users' passwords",
    **operation(202, None, 422, 501, body=schemas.USERS_UPDATE_ALL),
)
async def change_passwords(project_id: str, instance_id: str, call: CallsDep) -> Response:
    users = user_specs((await call.body(schemas.USERS_UPDATE_ALL))["users"])
    await call("change_passwords", instance_id=instance_id, users=users)
    return accepted()


@router.get("/{user_id}", summary="Show a user", **operation(200, schemas.USER_SINGLE, 422, 501))
async def show_user(
    project_id: str, instance_id: str, user_id: str, call: CallsDep
) -> dict[str, Any]:
    name, host = user_and_host(user_id)
    user = await call("get_user", instance_id=instance_id, name=name, host=host)
    return {"user": user_view(user)}


@router.put(
    "/{user_id}",
    summary="Change a user's name, host or password",
    **operation(202, None, 422, 501, body=schemas.USER_UPDATE),
)
async def update_user(project_id: str, instance_id: str, user_id: str, call: CallsDep) -> Response:
    wanted = (await call.body(schemas.USER_UPDATE))["user"]
    changes = UserChanges(wanted.get("name"), wanted.get("host"), wanted.get("password"))
    name, host = user_and_host(user_id)
    await call(
        "update_user",
        instance_id=instance_id,
        name=name,
        host=host,
        changes=changes,
    )
    return accepted()


@router.delete("/{user_id}", summary="Delete a user", **operation(202, None, 422, 501))
async def delete_user(project_id: str, instance_id: str, user_id: str, call: CallsDep) -> Response:
    name, host = user_and_host(user_id)
    await call("delete_user", instance_id=instance_id, name=name, host=host)
    return accepted()


@router.get(
    "/{user_id}/databases",
    summary="List the databases a user can reach",
    **operation(200, schemas.DATABASE_LIST, 422, 501),
)
async def list_access(
    project_id: str, instance_id: str, user_id: str, call: CallsDep
) -> dict[str, Any]:
    name, host = user_and_host(user_id)
    databases = await call("user_databases", instance_id=instance_id, name=name, host=host)
    return {"databases": [{"name": db} for db in databases]}


@router.put(
    "/{user_id}/databases",
    summary="Grant a user access to databases",
    **operation(202, None, 422, 501, body=schemas.USER_ACCESS_UPDATE),
)
async def grant_access(project_id: str, instance_id: str, user_id: str, call: CallsDep) -> Response:
    body = await call.body(schemas.USER_ACCESS_UPDATE)
    names = [str(d["name"]) for d in body["databases"]]
    user, host = user_and_host(user_id)
    await call(
        "grant",
        instance_id=instance_id,
        name=user,
        host=host,
        databases=names,
    )
    return accepted()


@router.delete(
    "/{user_id}/databases/{database}",
    summary="Revoke a user's access to a database",
    **operation(202, None, 422, 501),
)
async def revoke_access(
    project_id: str, instance_id: str, user_id: str, database: str, call: CallsDep
) -> Response:
    name, host = user_and_host(user_id)
    await call(
        "revoke",
        instance_id=instance_id,
        name=name,
        host=host,
        database=database,
    )
    return accepted()
