"""Engine error classes. Messages are shown to users: never put secrets in them."""

from __future__ import annotations

from pydantic import ValidationError


class EngineError(Exception):
    """Base of every engine failure."""


class EngineUnavailableError(EngineError):
    """The datastore's server or tools are not installed on this host."""


class InstanceError(EngineError):
    """A managed server could not be created, started, stopped or removed."""


class BackupError(EngineError):
    """A backup stream could not be produced."""


class RestoreError(EngineError):
    """A backup chain could not be restored."""


class CheckFailedError(EngineError):
    """A restored database failed the engine's own consistency checks."""


class IncompatibleBackupError(RestoreError):
    """The backup was taken from a server this engine cannot restore into."""


class ExternalNotAllowedError(EngineError):
    """An external instance outside the operator's allow-lists."""


class InvalidExternalError(EngineError):
    """External connection details that are malformed, unreachable or lack privileges."""


class InvalidRequestError(EngineError):
    """Requested users or databases the engine refuses (reserved or malformed names)."""


class AccountNotFoundError(EngineError):
    """A user or database the request names does not exist on the server."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name} cannot be found on the instance.")
        self.kind = kind  # "User" or "Database", as Trove's fault names them
        self.name = name


def validation_reason(exc: ValidationError) -> str:
    """The first thing wrong, as ``field: message`` (never the input: it may be a secret)."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "metadata"
    return f"{where}: {error['msg']}"
