"""Domain errors. They know nothing of HTTP: api/errors.py maps each class to a status."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every domain error; the message is shown to the caller."""


class NotFoundError(DomainError):
    """A resource that does not exist or is not visible to the caller (→ 404)."""


class ResourceNotFoundError(NotFoundError):
    def __init__(self, resource_id: str) -> None:
        super().__init__(f"Resource {resource_id} cannot be found.")


class DatastoreNotFoundError(NotFoundError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Datastore '{name}' cannot be found.")


class BadRequestError(DomainError):
    """Invalid input or a rule Trove reports as 400."""


class DatastoreVersionNotFoundError(BadRequestError):
    """Trove maps this "not found" to 400."""

    def __init__(self, version: str) -> None:
        super().__init__(f"Datastore version '{version}' cannot be found.")


class ValidationError(BadRequestError):
    """A request body that fails its schema."""


class PolicyNotAuthorizedError(DomainError):
    def __init__(self, rule: str) -> None:
        super().__init__(f"Policy doesn't allow {rule} to be performed.")


class ForbiddenError(DomainError):
    """An operation the caller may not perform (→ 403)."""


class UnprocessableError(DomainError):
    """Resource busy (→ 422)."""


class InvalidStateError(UnprocessableError):
    """A state transition that is not allowed."""


class BackupRunningError(UnprocessableError):
    def __init__(self, backup_id: str) -> None:
        super().__init__(f"Backup {backup_id} cannot be deleted because it is running.")


class ConflictError(DomainError):
    """(→ 409) e.g. restore from a backup that is not completed."""


class QuotaExceededError(DomainError):
    def __init__(self, resources: list[str]) -> None:
        super().__init__(f"Quota exceeded for resources: {resources!r}.")


class OverLimitError(DomainError):
    """(→ 413) a size or count over a configured maximum."""


class NotImplementedByDatastoreError(DomainError):
    """(→ 501) the datastore does not support the operation."""


class ServiceUnavailableError(DomainError):
    """(→ 503) a part of the service that must answer did not, in time; try again later."""


class StorageUnavailableError(DomainError):
    """(→ 500 serverError) the object store cannot be reached."""


class StorageAccessDeniedError(DomainError):
    """(→ 401) the object store refuses the service's credentials."""
