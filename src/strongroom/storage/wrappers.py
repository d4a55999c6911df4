"""Cross-cutting behaviour as backends that hold another backend.

Compose them visibly, e.g. ``RetryingBackend(swift)``;
``unwrap()`` returns the backend one level down.
"""

from __future__ import annotations

import builtins
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from strongroom.storage.base import ObjectInfo, StorageBackend
from strongroom.storage.errors import TransientStorageError

log = logging.getLogger(__name__)

T = TypeVar("T")


class RetryingBackend:
    """Retries :class:`TransientStorageError` with capped exponential backoff and jitter.

    Attempt ``n`` (from 1) that fails transiently waits ``d/2 + uniform(0, d/2)`` with
    ``d = min(max_delay, base_delay * 2 ** (n - 1))`` before the next; after ``attempts``
    tries the last error is raised. Permanent errors are raised at once. Every operation of
    the contract is safe to retry; ``close`` is not retried.
    """

    def __init__(
        self,
        inner: StorageBackend,
        attempts: int = 5,
        base_delay: float = 0.2,
        max_delay: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._inner = inner
        self._attempts = attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._jitter = jitter

    def unwrap(self) -> StorageBackend:
        return self._inner

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self._max_delay, self._base_delay * 2.0 ** (attempt - 1))
        return ceiling / 2 + self._jitter() * ceiling / 2

    def _retry(self, op: str, fn: Callable[[], T]) -> T:
        attempt = 1
        while True:
            try:
                return fn()
            except TransientStorageError as exc:
                if attempt >= self._attempts:
                    exc.add_note(f"gave up after {attempt} attempts")
                    raise
                wait = self.delay(attempt)
                log.warning(
                    "storage %s failed (attempt %d of %d), retrying in %.2fs: %s",
                    op,
                    attempt,
                    self._attempts,
                    wait,
                    exc,
                )
                self._sleep(wait)
                attempt += 1

    def put(self, key: str, data: bytes) -> None:
        self._retry("put", lambda: self._inner.put(key, data))

    def get(self, key: str) -> bytes:
        return self._retry("get", lambda: self._inner.get(key))

    def stat(self, key: str) -> ObjectInfo:
        return self._retry("stat", lambda: self._inner.stat(key))

    def list(self, prefix: str) -> builtins.list[str]:
        return self._retry("list", lambda: self._inner.list(prefix))

    def delete(self, key: str) -> None:
        self._retry("delete", lambda: self._inner.delete(key))

    def url_for(self, key: str) -> str:
        return self._retry("url_for", lambda: self._inner.url_for(key))

    def key_for_url(self, url: str) -> str | None:
        return self._retry("key_for_url", lambda: self._inner.key_for_url(url))

    def check(self) -> None:
        self._retry("check", self._inner.check)

    def close(self) -> None:
        self._inner.close()
