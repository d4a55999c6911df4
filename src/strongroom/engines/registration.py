"""What a tenant sends to register its own server ("external" instance), checked by a
model instead of by hand: the fields every engine shares here, each engine's own in its
``models.py``, and one way of saying what is wrong (a 400's message, never the values:
a registration holds a password)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, field_validator

from strongroom.engines.errors import InvalidExternalError

Required = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class Registration(BaseModel):
    """``host``, ``port``, ``user`` and ``password`` of a server reached over the network.
    Other fields of the request are the API's or another engine's: ignored here."""

    model_config = ConfigDict(extra="ignore", frozen=True, hide_input_in_errors=True)

    host: Required
    port: int
    user: Required
    password: str = ""

    @field_validator("port", mode="before")
    @classmethod
    def _a_port(cls, value: Any) -> int:
        # JSON's true is not port 1; "5432" (a form, a CLI) is port 5432.
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("must be a number")
        try:
            port = int(value)
        except ValueError:
            raise ValueError("must be a number") from None
        if not 0 < port < 65536:
            raise ValueError("must be between 1 and 65535")
        return port


_R = TypeVar("_R", bound=Registration)

_PLAIN = {
    "missing": "is required",
    "string_too_short": "is required",
    "string_type": "must be a string",
}


def parse_registration(model: type[_R], params: Mapping[str, Any]) -> _R:
    """``params`` as ``model``; ``InvalidExternalError`` naming the first field at fault."""
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        raise InvalidExternalError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    error = exc.errors(include_input=False)[0]
    field = ".".join(str(part) for part in error["loc"]) or "the registration"
    plain = _PLAIN.get(error["type"])
    if plain is None:
        plain = str(error["msg"]).removeprefix("Value error, ")  # a validator's own words
    return f"{field} {plain}"
