"""/v1.0/{project_id}/instances/{instance_id}/users…: Trove's users of a managed instance
and their access to databases."""

from __future__ import annotations

from typing import Any

from fastapi import Response

from strongroom.api.account_views import user_and_host, user_specs, user_view
from strongroom.api.openapi import operation
from strongroom.api.routes.account_calls import CallsDep, collection_router
from strongroom.api.schemas import accounts as schemas
from strongroom.services.accounts import UserChanges

router = collection_router(
    "users",
    view=user_view,
    specs=user_specs,
    page_schema=schemas.USER_LIST,
    create_schema=schemas.USERS_CREATE,
)


@router.put(
    "",
    summary="Change users' passwords",
    **operation(202, None, 422, 501, body=schemas.USERS_UPDATE_ALL),
)
async def change_passwords(project_id: str, instance_id: str, call: CallsDep) -> Response:
    users = user_specs((await call.body(schemas.USERS_UPDATE_ALL))["users"])
    return await call.accepted("change_passwords", instance_id=instance_id, users=users)


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
    return await call.accepted(
        "update_user",
        instance_id=instance_id,
        name=name,
        host=host,
        changes=changes,
    )


@router.delete("/{user_id}", summary="Delete a user", **operation(202, None, 422, 501))
async def delete_user(project_id: str, instance_id: str, user_id: str, call: CallsDep) -> Response:
    name, host = user_and_host(user_id)
    return await call.accepted("delete_user", instance_id=instance_id, name=name, host=host)


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
    return await call.accepted(
        "grant",
        instance_id=instance_id,
        name=user,
        host=host,
        databases=names,
    )


@router.delete(
    "/{user_id}/databases/{database}",
    summary="Revoke a user's access to a database",
    **operation(202, None, 422, 501),
)
async def revoke_access(
    project_id: str, instance_id: str, user_id: str, database: str, call: CallsDep
) -> Response:
    name, host = user_and_host(user_id)
    return await call.accepted(
        "revoke",
        instance_id=instance_id,
        name=name,
        host=host,
        database=database,
    )
