"""/v1.0/{project_id}/instances/{instance_id}/databases…: Trove's databases of a managed
instance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from strongroom.api.account_views import database_specs, database_view, page
from strongroom.api.deps import int_param
from strongroom.api.openapi import LIMIT, MARKER, operation
from strongroom.api.routes.account_calls import CallsDep, accepted
from strongroom.api.schemas import accounts as schemas

router = APIRouter(prefix="/v1.0/{project_id}/instances/{instance_id}/databases")


@router.get(
    "",
    summary="List an instance's databases",
    **operation(200, schemas.DATABASE_LIST, 422, 501, params=(LIMIT, MARKER)),
)
async def list_databases(project_id: str, instance_id: str, call: CallsDep) -> dict[str, Any]:
    offset, limit = int_param(call.request, "marker") or 0, int_param(call.request, "limit")
    names = await call("list_databases", instance_id=instance_id)
    return page(call.request, "databases", [database_view(n) for n in names], offset, limit)


@router.post(
    "", summary="Create databases", **operation(202, None, 422, 501, body=schemas.DATABASES_CREATE)
)
async def create_databases(project_id: str, instance_id: str, call: CallsDep) -> Response:
    specs = database_specs((await call.body(schemas.DATABASES_CREATE))["databases"])
    await call("create_databases", instance_id=instance_id, databases=specs)
    return accepted()


@router.get(
    "/{database}",
    summary="Show a database: Trove answers 501 (clients list the databases instead)",
    **operation(200, None, 422, 501),
)
@router.delete("/{database}", summary="Delete a database", **operation(202, None, 422, 501))
async def one_database(
    project_id: str, instance_id: str, database: str, call: CallsDep
) -> Response:
    # GET reaches the service's show, which answers 501 after Trove's checks.
    method = "delete_database" if call.request.method == "DELETE" else "show_database"
    await call(method, instance_id=instance_id, name=database)
    return accepted()
