"""Request plumbing shared by routes: the caller, the services, bodies, query integers."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from strongroom.api.blocking import BlockingCalls
from strongroom.api.edge import EdgeSettings
from strongroom.domain.errors import BadRequestError, DomainError, OverLimitError
from strongroom.domain.model import RequestContext
from strongroom.services.container import Services

T = TypeVar("T")


class UnsupportedMediaTypeError(DomainError):
    pass


# async: FastAPI runs plain ``def`` dependencies in its thread pool, a hop per request.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_context(request: Request) -> RequestContext:
    ctx: RequestContext = request.state.ctx
    return ctx


ServicesDep = Annotated[Services, Depends(get_services)]
ContextDep = Annotated[RequestContext, Depends(get_context)]


def caller(request: Request) -> tuple[RequestContext, Services]:
    """What ``ContextDep`` and ``ServicesDep`` give, read in the handler: the most requested
    reads take them this way, as FastAPI's resolution of two dependencies cost a tenth of
    such a request."""
    return request.state.ctx, request.app.state.services


async def read(services: Services, call: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a metadata read: on the event loop when the metadata is the embedded SQLite
    file (a local read of a fraction of a millisecond: a thread hop costs more, and
    under load dozens of request threads take turns at the GIL); in the thread pool
    when it is a database across the network."""
    if services.local_metadata:
        return call(*args, **kwargs)
    return await run_in_threadpool(call, *args, **kwargs)


async def blocking(
    request: Request, ctx: RequestContext, call: Callable[..., T], /, *args: Any, **kwargs: Any
) -> T:
    """Run a call that may block (a store, a database server, a tenant's locked file) in a
    thread, within the caller's project's share of threads (``api.blocking``)."""
    calls: BlockingCalls = request.app.state.blocking
    return await calls.run(ctx.project_id, call, *args, **kwargs)


def accepted() -> Response:
    """Trove's answer to a delete or an accepted change: 202 with an empty JSON body."""
    return Response(status_code=202, media_type="application/json")


async def accepted_after(
    request: Request, ctx: RequestContext, call: Callable[..., object], /, **kwargs: Any
) -> Response:
    """``call(ctx, **kwargs)`` run as :func:`blocking` runs it, then Trove's empty 202."""
    await blocking(request, ctx, call, ctx, **kwargs)
    return accepted()


class BodyTimeoutError(DomainError):
    """(→ 408) the client did not send its whole body in time."""


# Trove's request bodies nest four or five levels; a deeper body is an attack on the parser.
MAX_DEPTH = 32


_REQUIRED: Any = object()


async def json_body(request: Request, *, empty: Any = _REQUIRED) -> Any:
    """The request body as JSON, with Trove's media-type rules; an empty body reads as
    ``empty`` when that is given, else is a 400."""
    limit = request.app.state.services.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise OverLimitError(f"Request body is larger than {limit} bytes.")
    edge: EdgeSettings = request.app.state.edge
    # A bytearray grows in place: ``bytes +=`` copies the whole body for every piece.
    raw = bytearray()
    try:
        with anyio.fail_after(edge.body_timeout):
            async for piece in request.stream():
                raw += piece
                if len(raw) > limit:
                    raise OverLimitError(f"Request body is larger than {limit} bytes.")
    except TimeoutError:
        raise BodyTimeoutError(
            f"The request body was not received within {edge.body_timeout:g} s."
        ) from None
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not raw:
        if empty is not _REQUIRED:
            return empty
        raise BadRequestError("Validation error: the request body is missing.")
    if not media:
        raise BadRequestError("The request body needs Content-Type: application/json.")
    if media != "application/json":
        raise UnsupportedMediaTypeError(f"Unsupported Content-Type: {media}.")
    try:
        body = json.loads(
            raw, parse_constant=_refuse_constant, parse_float=_finite, parse_int=_int64
        )
        # "\ud800" escapes decode to lone surrogates, which no UTF-8 store accepts.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise BadRequestError(f"Malformed request body: nested deeper than {MAX_DEPTH}.") from None
    except (ValueError, UnicodeError) as exc:
        raise BadRequestError("Malformed request body") from exc
    _check_shape(body)
    return body


def _check_shape(body: Any) -> None:
    """No nesting deeper than MAX_DEPTH, and no NUL in any string or key: no metadata
    database stores NUL in text (PostgreSQL refuses it)."""
    pending: list[tuple[Any, int]] = [(body, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise BadRequestError(f"Malformed request body: nested deeper than {MAX_DEPTH}.")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and "\x00" in key:
                    raise BadRequestError("Malformed request body: a key contains NUL (U+0000).")
                pending.append((item, depth + 1))
        elif isinstance(value, str) and "\x00" in value:
            raise BadRequestError("Malformed request body: a string contains NUL (U+0000).")


# Integers are stored and compared as SQLite's 64-bit INTEGER, and numbers as doubles.
MAX_INT = 2**63 - 1


def _refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259), though Python's parser accepts them."""
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400 parses as inf, which no JSON response can carry
        raise ValueError(f"{text[:20]} is out of range")
    return number


def _int64(text: str) -> int:
    number = int(text)
    if abs(number) > MAX_INT:
        raise ValueError(f"{text[:20]}… is out of range")
    return number


def int_param(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    digits = value.strip()
    negative = digits.startswith("-")
    if negative:
        digits = digits[1:]
    if not (digits.isascii() and digits.isdigit()):
        raise BadRequestError(f"{name} must be an integer.")
    if negative:
        raise BadRequestError(f"{name} must not be negative.")
    number = int(digits)
    if number > MAX_INT:
        raise BadRequestError(f"{name} must not be greater than {MAX_INT}.")
    return number


TRUTHY = {"1", "t", "true", "on", "y", "yes"}


def truthy_param(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").strip().lower() in TRUTHY
