"""What the user, database and root routes share: the account service of this process
(local, or relayed to the instance's host), one call of it in the caller's share of
threads, a validated body, Trove's empty 202, and the list and create routes of a
collection (users, databases)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from strongroom.api.account_views import page
from strongroom.api.deps import ContextDep, ServicesDep, accepted, blocking, int_param, json_body
from strongroom.api.openapi import LIMIT, MARKER, operation
from strongroom.api.schemas.requests import validate
from strongroom.domain.model import RequestContext
from strongroom.services.account_relay import RelayedAccounts
from strongroom.services.accounts import AccountService
from strongroom.services.container import Services


def accounts_of(services: Services) -> AccountService | RelayedAccounts:
    if services.accounts is None:
        raise RuntimeError("user and database management is not configured")
    return services.accounts


@dataclass(frozen=True)
class Calls:
    """One request's calls of the account service, as its caller."""

    request: Request
    ctx: RequestContext
    services: Services

    async def __call__(self, method: str, **kwargs: Any) -> Any:
        """``method`` (on ``instance_id``…) in a thread of the caller's project's share."""
        service = accounts_of(self.services)
        return await blocking(self.request, self.ctx, getattr(service, method), self.ctx, **kwargs)

    async def accepted(self, method: str, **kwargs: Any) -> Response:
        """``method`` called, then Trove's empty 202."""
        await self(method, **kwargs)
        return accepted()

    async def page(
        self, method: str, key: str, view: Callable[[Any], dict[str, Any]], **kwargs: Any
    ) -> dict[str, Any]:
        """A page (``marker``, ``limit``) of what ``method`` lists, under ``key``, each
        item as ``view`` shows it."""
        offset, limit = int_param(self.request, "marker") or 0, int_param(self.request, "limit")
        items = await self(method, **kwargs)
        return page(self.request, key, [view(item) for item in items], offset, limit)

    async def body(self, schema: dict[str, Any]) -> Any:
        body = await json_body(self.request)
        validate(schema, body)
        return body


def _calls(request: Request, ctx: ContextDep, services: ServicesDep) -> Calls:
    return Calls(request, ctx, services)


CallsDep = Annotated[Calls, Depends(_calls)]


def collection_router(
    key: str,
    *,
    view: Callable[[Any], dict[str, Any]],
    specs: Callable[[list[dict[str, Any]]], list[Any]],
    page_schema: dict[str, Any],
    create_schema: dict[str, Any],
) -> APIRouter:
    """The router of an instance's ``key`` ("users", "databases") with Trove's ``GET ""``
    (a page of them) and ``POST ""`` (create several). The routes are named
    ``list_<key>`` and ``create_<key>``, as the account service's methods they call."""
    router = APIRouter(prefix=f"/v1.0/{{project_id}}/instances/{{instance_id}}/{key}")

    @router.get(
        "",
        name=f"list_{key}",
        summary=f"List an instance's {key}",
        **operation(200, page_schema, 422, 501, params=(LIMIT, MARKER)),
    )
    async def list_page(project_id: str, instance_id: str, call: CallsDep) -> dict[str, Any]:
        return await call.page(f"list_{key}", key, view, instance_id=instance_id)

    @router.post(
        "",
        name=f"create_{key}",
        summary=f"Create {key}",
        **operation(202, None, 422, 501, body=create_schema),
    )
    async def create(project_id: str, instance_id: str, call: CallsDep) -> Response:
        items = specs((await call.body(create_schema))[key])
        return await call.accepted(f"create_{key}", instance_id=instance_id, **{key: items})

    return router
