"""Fault injection for real stores: wrap a real backend and fail on a script."""

from __future__ import annotations

import threading
import time

from strongroom.storage.base import ObjectInfo, StorageBackend
from strongroom.storage.errors import StorageError


class FailingBackend:
    """Delegates to ``inner``; the Nth ``put`` (1-based) and every later one raise while
    ``fail_puts_from`` is set; ``corrupt_gets`` flips a byte in what ``get`` returns;
    ``slow_gets`` answers each ``get`` that many seconds late (a slow store)."""

    def __init__(self, inner: StorageBackend) -> None:
        self.inner = inner
        self.fail_puts_from: int | None = None
        self.corrupt_gets = False
        self.slow_gets = 0.0
        self.puts = 0
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self.puts += 1
            failing = self.fail_puts_from is not None and self.puts >= self.fail_puts_from
        if failing:
            raise StorageError(f"injected write failure for {key}")
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        if self.slow_gets:
            time.sleep(self.slow_gets)  # the store's latency, not a wait on the code tested
        data = self.inner.get(key)
        if self.corrupt_gets and data:
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]
        return data

    def stat(self, key: str) -> ObjectInfo:
        return self.inner.stat(key)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def url_for(self, key: str) -> str:
        return self.inner.url_for(key)

    def key_for_url(self, url: str) -> str | None:
        return self.inner.key_for_url(url)

    def check(self) -> None:
        self.inner.check()

    def close(self) -> None:
        self.inner.close()
