"""The storage boundary: named, immutable objects. Storage knows nothing of backups.

A key is ``<container>/<path>``: the first segment is the container (a Swift container,
an S3 bucket, a top-level directory of a local store); the rest names the object inside it.
Keys are validated by every backend (see :func:`strongroom.storage.keys.validate_key`):
no empty, ``.`` or ``..`` segments, no NUL or control characters, bounded length.

Contract of every backend (checked by ``tests/contract/test_storage.py``):

* ``put(key, data)`` stores ``data`` atomically: a reader sees the whole object or nothing.
  Overwriting an existing key is allowed. Creates the container if it does not exist.
  Safe to retry.
* ``get(key)`` returns the whole object. Objects are bounded (chunks of a few MiB and
  manifests), so whole-object reads are fine. Raises ``ObjectNotFoundError``.
* ``stat(key)`` returns ``ObjectInfo``; raises ``ObjectNotFoundError``.
* ``list(prefix)`` returns the keys starting with ``prefix`` (which includes the
  container), sorted, never temporary or partial objects. A missing container lists empty.
* ``delete(key)``: a missing key is not an error. Safe to retry.
* ``url_for(key)`` is the public location of an object (``file:///…``, ``http(s)://…/v1/
  AUTH_x/container/object``, ``s3://bucket/key``): what ``locationRef`` shows.
* ``key_for_url(url)`` is the inverse: the key of an object of *this* store addressed by
  ``url``, or ``None`` when the URL does not belong to this store.
* ``check()`` verifies the store is reachable and the credentials work.
* ``close()`` releases connections.

Errors are ``strongroom.storage.errors`` types only; transient ones are
``TransientStorageError`` (retry is safe), everything else is permanent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


@dataclass(frozen=True)
class TemporaryObject:
    """A partial write a store keeps beside its objects (e.g. a killed writer's temp file)."""

    key: str  # the key it would have; its last segment starts with TEMP_PREFIX
    modified: float  # POSIX time of its last write


TEMP_PREFIX = ".strongroom-tmp-"


@runtime_checkable
class TemporaryObjects(Protocol):
    """A store whose atomic puts go through temporary objects, which a writer killed
    mid-put leaves behind. ``list_temporary(prefix)`` returns them under ``prefix`` (same
    rules as ``list``); ``delete_temporary(key)`` removes one (a missing one is fine) and
    refuses any key that is not a temporary object's."""

    def list_temporary(self, prefix: str) -> list[TemporaryObject]: ...

    def delete_temporary(self, key: str) -> None: ...


@runtime_checkable
class StorageBackend(Protocol):
    """One object store. See the module docstring for the contract."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...

    def url_for(self, key: str) -> str: ...

    def key_for_url(self, url: str) -> str | None: ...

    def check(self) -> None: ...

    def close(self) -> None: ...
