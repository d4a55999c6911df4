"""/v1.0/{project_id}/instances/{instance_id}/databases…: Trove's databases of a managed
instance."""

from __future__ import annotations

from fastapi import Response

from strongroom.api.account_views import database_specs, database_view
from strongroom.api.openapi import operation
from strongroom.api.routes.account_calls import CallsDep, collection_router
from strongroom.api.schemas import accounts as schemas

router = collection_router(
    "databases",
    view=database_view,
    specs=database_specs,
    page_schema=schemas.DATABASE_LIST,
    create_schema=schemas.DATABASES_CREATE,
)


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
    return await call.accepted(method, instance_id=instance_id, name=database)
