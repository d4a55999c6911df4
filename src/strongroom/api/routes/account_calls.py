"""What the user, database and root routes share: the account service of this process
(local, or relayed to the instance's host), one call of it in the caller's share of
threads, a validated body, and Trove's empty 202."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response

from strongroom.api.deps import ContextDep, ServicesDep, blocking, json_body
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

    async def body(self, schema: dict[str, Any]) -> Any:
        body = await json_body(self.request)
        validate(schema, body)
        return body


def _calls(request: Request, ctx: ContextDep, services: ServicesDep) -> Calls:
    return Calls(request, ctx, services)


CallsDep = Annotated[Calls, Depends(_calls)]


def accepted() -> Response:
    return Response(status_code=202, media_type="application/json")
