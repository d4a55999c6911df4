"""Storage error classes. Adapters convert client-library errors into these at their edge."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every storage failure. Permanent unless it is a TransientStorageError."""


class TransientStorageError(StorageError):
    """A failure that may succeed when retried (connection reset, 5xx, throttling)."""


class ObjectNotFoundError(StorageError):
    """The object (or its container) does not exist."""


class StorageAuthError(StorageError):
    """The store refused the credentials."""


class InvalidKeyError(StorageError, ValueError):
    """A key or container name that is not allowed (path tricks, bad characters, too long)."""


class StorageConfigError(StorageError, ValueError):
    """A store's configuration is incomplete or inconsistent (found before any request)."""


class UnknownStoreError(StorageError, LookupError):
    """No store of that name is configured."""
