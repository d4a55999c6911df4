"""Domain error → (HTTP status, Trove fault name): one table, and the fault body."""

from __future__ import annotations

import logging
import uuid

from strongroom.api.rendering import JsonResponse
from strongroom.domain import errors as e

log = logging.getLogger(__name__)

# Most specific first: the first matching class wins.
ERROR_TABLE: list[tuple[type[Exception], int, str]] = [
    (e.DatastoreVersionNotFoundError, 400, "badRequest"),
    (e.NotFoundError, 404, "itemNotFound"),
    (e.BadRequestError, 400, "badRequest"),
    (e.PolicyNotAuthorizedError, 403, "forbidden"),
    (e.ForbiddenError, 403, "forbidden"),
    (e.UnprocessableError, 422, "unprocessableEntity"),
    (e.ConflictError, 409, "conflict"),
    (e.QuotaExceededError, 413, "overLimit"),
    (e.OverLimitError, 413, "overLimit"),
    (e.NotImplementedByDatastoreError, 501, "notImplemented"),
    (e.ServiceUnavailableError, 503, "serviceUnavailable"),
    (e.StorageUnavailableError, 500, "serverError"),
    (e.StorageAccessDeniedError, 401, "unauthorized"),
]

FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "itemNotFound",
    409: "conflict",
    413: "overLimit",
    415: "badMediaType",
    422: "unprocessableEntity",
    500: "instanceFault",
    501: "notImplemented",
    503: "serviceUnavailable",
}


def fault(status: int, message: str, name: str | None = None) -> JsonResponse:
    fault_name = name or FAULT_NAMES.get(status, "badRequest")
    return JsonResponse({fault_name: {"code": status, "message": message}}, status_code=status)


def domain_fault(exc: e.DomainError) -> JsonResponse:
    for cls, status, name in ERROR_TABLE:
        if isinstance(exc, cls):
            return fault(status, str(exc), name)
    return fault(400, str(exc), "badRequest")


def unexpected_fault(exc: BaseException) -> JsonResponse:
    incident = uuid.uuid4()
    log.error("unexpected error %s", incident, exc_info=exc)
    return fault(
        500,
        "Internal Server Error. Please keep this ID to help us figure out what went wrong: "
        f"({incident}).",
        "instanceFault",
    )


def unauthorized() -> JsonResponse:
    response = JsonResponse(
        {
            "unauthorized": {
                "code": 401,
                "message": "The request you have made requires authentication.",
            }
        },
        status_code=401,
    )
    response.headers["WWW-Authenticate"] = 'Keystone uri="local"'
    return response
