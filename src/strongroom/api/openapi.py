"""What /openapi.json says beyond FastAPI's defaults.

Routes read their query parameters and bodies themselves (Trove's validation messages, not
FastAPI's), so FastAPI cannot see them; each route declares them here instead: query
parameters, the body schema, the success body, and the Trove fault body on error statuses.
The X-Auth-Token header is declared as the security scheme of every project route."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response
from pydantic import BaseModel, ConfigDict, RootModel

TOKEN_SCHEME = "keystoneToken"
SECURITY_SCHEMES = {
    TOKEN_SCHEME: {
        "type": "apiKey",
        "in": "header",
        "name": "X-Auth-Token",
        "description": "A token from `strongroom token create` (or Keystone).",
    }
}

FAULT_DESCRIPTIONS = {
    400: "badRequest: invalid parameters or body",
    401: "unauthorized: missing, unknown or revoked token",
    403: "forbidden: URL project is not the token's project, or policy denies",
    404: "itemNotFound: unknown path, or a resource the caller cannot see",
    409: "conflict: the backup is not restorable",
    413: "overLimit: body too large, quota exceeded, volume too large",
    415: "badMediaType: the body is not application/json",
    422: "unprocessableEntity: instance or backup busy",
    500: "instanceFault or serverError: unexpected failure (carries an incident id)",
    501: "notImplemented: the datastore does not support the operation",
}
PROJECT_FAULTS = (400, 401, 403, 404, 500)
BODY_FAULTS = (413, 415)


class FaultBody(BaseModel):
    code: int
    message: str


class Fault(RootModel[dict[str, FaultBody]]):
    """Trove's fault body: exactly one key, the fault name, e.g. ``itemNotFound``."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


LIMIT = query("limit", {"type": "integer", "minimum": 1}, "page size (default 20)")
MARKER = query("marker", {"type": "integer", "minimum": 0}, "row offset of the page")
INSTANCE_ID = query("instance_id", {"type": "string"}, "only this instance's rows")
PROJECT_ID = query("project_id", {"type": "string"}, "another project's rows (admin only)")


def operation(
    status: int,
    schema: dict[str, Any] | None,
    *faults: int,
    params: tuple[dict[str, Any], ...] = (),
    body: dict[str, Any] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    """Keyword arguments for a route decorator that document one operation.

    ``schema`` is the success body's JSON Schema; ``None`` means an empty body."""
    codes = {500, *faults}
    if not public:
        codes.update(PROJECT_FAULTS)
    if body is not None:
        codes.update(BODY_FAULTS)
    responses: dict[int | str, dict[str, Any]] = {
        code: {"model": Fault, "description": FAULT_DESCRIPTIONS[code]} for code in sorted(codes)
    }
    # Every other client error is a fault too (and FastAPI's own 422 body never is sent).
    responses["4XX"] = {"model": Fault, "description": "any other client error"}
    kwargs: dict[str, Any] = {"status_code": status}
    if schema is None:
        kwargs["response_class"] = Response
        responses[status] = {"description": "Accepted; the body is empty."}
    else:
        responses[status] = {"content": {"application/json": {"schema": schema}}}
    kwargs["responses"] = responses
    extra: dict[str, Any] = {}
    if params:
        extra["parameters"] = list(params)
    if body is not None:
        extra["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    if not public:
        extra["security"] = [{TOKEN_SCHEME: []}]
    if extra:
        kwargs["openapi_extra"] = extra
    return kwargs


def install(app: FastAPI) -> None:
    """Add the token security scheme to the generated document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        return document

    app.openapi = openapi  # type: ignore[method-assign]
