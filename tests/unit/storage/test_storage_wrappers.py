from __future__ import annotations

import builtins
import threading
import time

import pytest

from strongroom.storage.base import ObjectInfo, StorageBackend
from strongroom.storage.errors import (
    ObjectNotFoundError,
    StorageAuthError,
    StorageError,
    TransientStorageError,
)
from strongroom.storage.memory import MemoryBackend
from strongroom.storage.wrappers import RetryingBackend
from support.storage_wrappers import LimitedBackend, MeteredBackend, StorageMetrics


class ScriptedBackend:
    """Each call consumes one step of ``script``: ``p`` passes through to ``inner``,
    ``t`` raises TransientStorageError, ``E`` a permanent StorageAuthError. When the script
    is used up every call passes."""

    def __init__(self, inner: StorageBackend, script: str) -> None:
        self.inner = inner
        self.script = list(script)
        self.calls: list[str] = []

    def _step(self, op: str) -> None:
        self.calls.append(op)
        step = self.script.pop(0) if self.script else "p"
        if step == "t":
            raise TransientStorageError(f"scripted transient failure in {op}")
        if step == "E":
            raise StorageAuthError(f"scripted permanent failure in {op}")

    def put(self, key: str, data: bytes) -> None:
        self._step("put")
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        self._step("get")
        return self.inner.get(key)

    def stat(self, key: str) -> ObjectInfo:
        self._step("stat")
        return self.inner.stat(key)

    def list(self, prefix: str) -> builtins.list[str]:
        self._step("list")
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._step("delete")
        self.inner.delete(key)

    def url_for(self, key: str) -> str:
        self._step("url_for")
        return self.inner.url_for(key)

    def key_for_url(self, url: str) -> str | None:
        self._step("key_for_url")
        return self.inner.key_for_url(url)

    def check(self) -> None:
        self._step("check")

    def close(self) -> None:
        self.calls.append("close")


def _retrying(
    script: str, attempts: int = 5
) -> tuple[RetryingBackend, ScriptedBackend, list[float]]:
    sleeps: list[float] = []
    scripted = ScriptedBackend(MemoryBackend(), script)
    backend = RetryingBackend(scripted, attempts=attempts, sleep=sleeps.append, jitter=lambda: 0.5)
    return backend, scripted, sleeps


def test_retrying_backend_retries_transient_errors() -> None:
    backend, scripted, sleeps = _retrying("ttp")
    backend.put("c/x", b"data")
    assert scripted.calls == ["put", "put", "put"]
    assert len(sleeps) == 2
    assert backend.get("c/x") == b"data"


def test_retrying_backend_does_not_retry_permanent_errors() -> None:
    backend, scripted, sleeps = _retrying("E")
    with pytest.raises(StorageAuthError):
        backend.get("c/x")
    assert scripted.calls == ["get"]
    assert sleeps == []


def test_retrying_backend_does_not_retry_not_found() -> None:
    backend, scripted, sleeps = _retrying("")
    with pytest.raises(ObjectNotFoundError):
        backend.get("c/missing")
    assert scripted.calls == ["get"]
    assert sleeps == []


def test_retrying_backend_stops_at_permanent_error_after_transient_ones() -> None:
    backend, scripted, sleeps = _retrying("ttEp")
    with pytest.raises(StorageAuthError):
        backend.list("c")
    assert scripted.calls == ["list"] * 3
    assert len(sleeps) == 2


def test_retrying_backend_gives_up_after_attempts() -> None:
    backend, scripted, sleeps = _retrying("tttttttt", attempts=4)
    with pytest.raises(TransientStorageError) as caught:
        backend.stat("c/x")
    assert scripted.calls == ["stat"] * 4
    assert len(sleeps) == 3
    assert "gave up after 4 attempts" in caught.value.__notes__


def test_retrying_backend_retries_every_operation() -> None:
    backend, scripted, _ = _retrying("tp" * 8)
    backend.put("c/x", b"1")
    backend.delete("c/y")
    assert backend.url_for("c/x") == "memory://memory/c/x"
    assert backend.key_for_url("memory://memory/c/x") == "c/x"
    backend.check()
    assert backend.stat("c/x").size == 1
    assert backend.list("c") == ["c/x"]
    assert backend.get("c/x") == b"1"
    assert scripted.calls.count("put") == 2 and scripted.calls.count("delete") == 2


def test_retrying_backend_delays_grow_exponentially_and_are_capped() -> None:
    backend = RetryingBackend(
        MemoryBackend(), base_delay=0.2, max_delay=5.0, sleep=lambda _: None, jitter=lambda: 1.0
    )
    assert [round(backend.delay(n), 3) for n in range(1, 8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    low = RetryingBackend(MemoryBackend(), base_delay=0.2, jitter=lambda: 0.0)
    assert low.delay(1) == pytest.approx(0.1)


def test_retrying_backend_rejects_zero_attempts() -> None:
    with pytest.raises(ValueError):
        RetryingBackend(MemoryBackend(), attempts=0)


def test_wrappers_unwrap_and_close_inner() -> None:
    scripted = ScriptedBackend(MemoryBackend(), "")
    limited = LimitedBackend(scripted, 2)
    metered = MeteredBackend(limited)
    retrying = RetryingBackend(metered)
    assert retrying.unwrap() is metered
    assert metered.unwrap() is limited
    assert limited.unwrap() is scripted
    retrying.close()
    assert scripted.calls == ["close"]


class SlowBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.peak = 0
        self._count_lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        with self._count_lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.02)
        super().put(key, data)
        with self._count_lock:
            self.active -= 1


def test_limited_backend_caps_concurrency() -> None:
    slow = SlowBackend()
    backend = LimitedBackend(slow, max_concurrency=3)
    threads = [threading.Thread(target=backend.put, args=(f"c/{n}", b"x")) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert slow.peak <= 3
    assert len(backend.list("c")) == 12


def test_limited_backend_rejects_zero() -> None:
    with pytest.raises(ValueError):
        LimitedBackend(MemoryBackend(), 0)


def test_metered_backend_counts_calls_bytes_and_errors() -> None:
    backend = MeteredBackend(ScriptedBackend(MemoryBackend(), "pptE"))
    backend.put("c/a", b"12345")
    backend.put("c/b", b"123")
    with pytest.raises(TransientStorageError):
        backend.get("c/a")
    with pytest.raises(StorageError):
        backend.get("c/a")
    assert backend.get("c/a") == b"12345"
    with pytest.raises(ObjectNotFoundError):
        backend.stat("c/missing")
    assert backend.snapshot() == StorageMetrics(
        calls={"put": 2, "get": 3, "stat": 1},
        errors={"get": 2, "stat": 1},
        transient_errors=1,
        bytes_written=8,
        bytes_read=5,
    )
