"""Request plumbing shared by routes: the caller, the services, bodies, query integers."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, Request

from strongroom.domain.errors import BadRequestError, DomainError, OverLimitError
from strongroom.domain.model import RequestContext
from strongroom.services.container import Services


class UnsupportedMediaTypeError(DomainError):
    pass


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_context(request: Request) -> RequestContext:
    ctx: RequestContext = request.state.ctx
    return ctx


ServicesDep = Annotated[Services, Depends(get_services)]
ContextDep = Annotated[RequestContext, Depends(get_context)]


async def json_body(request: Request) -> Any:
    """The request body as JSON, with Trove's media-type rules (contract §1.2)."""
    limit = get_services(request).max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise OverLimitError(f"Request body is larger than {limit} bytes.")
    raw = b""
    async for piece in request.stream():
        raw += piece
        if len(raw) > limit:
            raise OverLimitError(f"Request body is larger than {limit} bytes.")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not raw:
        raise BadRequestError("Validation error: the request body is missing.")
    if not media:
        raise BadRequestError("The request body needs Content-Type: application/json.")
    if media != "application/json":
        raise UnsupportedMediaTypeError(f"Unsupported Content-Type: {media}.")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError("Malformed request body") from exc


def int_param(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError as exc:
        raise BadRequestError(f"{name} must be an integer.") from exc
    if number < 0:
        raise BadRequestError(f"{name} must not be negative.")
    return number


TRUTHY = {"1", "t", "true", "on", "y", "yes"}


def truthy_param(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").strip().lower() in TRUTHY
