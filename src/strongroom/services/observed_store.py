"""A store wrapper that reports each storage error reaching the service (after retries)
to telemetry, by the store's name and the error's kind."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import TypeVar

from strongroom.services.telemetry import Telemetry
from strongroom.storage.base import ObjectInfo, StorageBackend
from strongroom.storage.errors import StorageError

T = TypeVar("T")


class ObservedBackend:
    def __init__(self, inner: StorageBackend, *, name: str, telemetry: Telemetry) -> None:
        self._inner = inner
        self._name = name
        self._telemetry = telemetry

    def unwrap(self) -> StorageBackend:
        return self._inner

    def _observed(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except StorageError as exc:
            self._telemetry.store_error(store=self._name, kind=type(exc).__name__)
            raise

    def put(self, key: str, data: bytes) -> None:
        self._observed(lambda: self._inner.put(key, data))

    def get(self, key: str) -> bytes:
        return self._observed(lambda: self._inner.get(key))

    def stat(self, key: str) -> ObjectInfo:
        return self._observed(lambda: self._inner.stat(key))

    def list(self, prefix: str) -> builtins.list[str]:
        return self._observed(lambda: self._inner.list(prefix))

    def delete(self, key: str) -> None:
        self._observed(lambda: self._inner.delete(key))

    def url_for(self, key: str) -> str:
        return self._inner.url_for(key)

    def key_for_url(self, url: str) -> str | None:
        return self._inner.key_for_url(url)

    def check(self) -> None:
        self._observed(self._inner.check)

    def close(self) -> None:
        self._inner.close()
