"""Storage wrappers only tests use: a concurrency limit and per-operation counters.

Compose them visibly, e.g. ``MeteredBackend(LimitedBackend(memory, 8))``.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from strongroom.storage.base import ObjectInfo, StorageBackend
from strongroom.storage.errors import StorageError, TransientStorageError

T = TypeVar("T")


class LimitedBackend:
    """At most ``max_concurrency`` operations at a time reach the inner backend."""

    def __init__(self, inner: StorageBackend, max_concurrency: int) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._inner = inner
        self._semaphore = threading.BoundedSemaphore(max_concurrency)

    def unwrap(self) -> StorageBackend:
        return self._inner

    def _limited(self, fn: Callable[[], T]) -> T:
        with self._semaphore:
            return fn()

    def put(self, key: str, data: bytes) -> None:
        self._limited(lambda: self._inner.put(key, data))

    def get(self, key: str) -> bytes:
        return self._limited(lambda: self._inner.get(key))

    def stat(self, key: str) -> ObjectInfo:
        return self._limited(lambda: self._inner.stat(key))

    def list(self, prefix: str) -> builtins.list[str]:
        return self._limited(lambda: self._inner.list(prefix))

    def delete(self, key: str) -> None:
        self._limited(lambda: self._inner.delete(key))

    def url_for(self, key: str) -> str:
        return self._limited(lambda: self._inner.url_for(key))

    def key_for_url(self, url: str) -> str | None:
        return self._limited(lambda: self._inner.key_for_url(url))

    def check(self) -> None:
        self._limited(self._inner.check)

    def close(self) -> None:
        self._inner.close()


@dataclass(frozen=True)
class StorageMetrics:
    """Counters since the MeteredBackend was made. ``errors`` counts StorageErrors by op."""

    calls: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    transient_errors: int = 0
    bytes_written: int = 0
    bytes_read: int = 0


class MeteredBackend:
    """Counts calls, errors and bytes per operation; :meth:`snapshot` reads them."""

    def __init__(self, inner: StorageBackend) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._calls: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._transient = 0
        self._written = 0
        self._read = 0

    def unwrap(self) -> StorageBackend:
        return self._inner

    def snapshot(self) -> StorageMetrics:
        with self._lock:
            return StorageMetrics(
                calls=dict(self._calls),
                errors=dict(self._errors),
                transient_errors=self._transient,
                bytes_written=self._written,
                bytes_read=self._read,
            )

    def _metered(self, op: str, fn: Callable[[], T]) -> T:
        with self._lock:
            self._calls[op] = self._calls.get(op, 0) + 1
        try:
            return fn()
        except StorageError as exc:
            with self._lock:
                self._errors[op] = self._errors.get(op, 0) + 1
                if isinstance(exc, TransientStorageError):
                    self._transient += 1
            raise

    def put(self, key: str, data: bytes) -> None:
        self._metered("put", lambda: self._inner.put(key, data))
        with self._lock:
            self._written += len(data)

    def get(self, key: str) -> bytes:
        data = self._metered("get", lambda: self._inner.get(key))
        with self._lock:
            self._read += len(data)
        return data

    def stat(self, key: str) -> ObjectInfo:
        return self._metered("stat", lambda: self._inner.stat(key))

    def list(self, prefix: str) -> builtins.list[str]:
        return self._metered("list", lambda: self._inner.list(prefix))

    def delete(self, key: str) -> None:
        self._metered("delete", lambda: self._inner.delete(key))

    def url_for(self, key: str) -> str:
        return self._metered("url_for", lambda: self._inner.url_for(key))

    def key_for_url(self, url: str) -> str | None:
        return self._metered("key_for_url", lambda: self._inner.key_for_url(url))

    def check(self) -> None:
        self._metered("check", self._inner.check)

    def close(self) -> None:
        self._inner.close()
