"""One contract suite, run against every storage backend (see strongroom.storage.base).

Backends: memory, local, swift and s3 (both on the session's real Swift, see
fixtures/swift.py), and memory under the three wrappers. Each test gets a fresh container.

Key decisions checked here: ``%2e%2e`` is a literal object name (never decoded), so it is
accepted and round-trips through ``url_for``/``key_for_url``; ``..`` as a segment is refused.
Unicode keys are stored as given (no normalization).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.swift import (
    SwiftServer,
    make_s3_store_config,
    make_swift_store_config,
    unique_container,
)
from strongroom.storage.base import ObjectInfo, StorageBackend
from strongroom.storage.errors import InvalidKeyError, ObjectNotFoundError
from strongroom.storage.local import LocalBackend
from strongroom.storage.memory import MemoryBackend
from strongroom.storage.s3 import S3Backend
from strongroom.storage.swift import SwiftBackend
from strongroom.storage.wrappers import RetryingBackend
from support.storage_wrappers import LimitedBackend, MeteredBackend

MiB = 1024 * 1024

BACKENDS = ["memory", "local", "swift", "s3", "wrapped"]


@dataclass
class Store:
    backend: StorageBackend
    container: str

    def key(self, name: str) -> str:
        return f"{self.container}/{name}"


def _make_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> StorageBackend:
    if kind == "memory":
        return MemoryBackend()
    if kind == "local":
        return LocalBackend(tmp_path / "store")
    if kind == "wrapped":
        inner = LimitedBackend(MemoryBackend(), max_concurrency=4)
        return RetryingBackend(MeteredBackend(inner), sleep=lambda _: None)
    if kind == "swift":
        server: SwiftServer = request.getfixturevalue("swift_server")
        return SwiftBackend(make_swift_store_config(server))
    if kind == "s3":
        s3: S3Backend = request.getfixturevalue("s3_backend")
        return s3
    raise AssertionError(kind)


@pytest.fixture(scope="module")
def s3_backend(s3_server: SwiftServer) -> Iterator[S3Backend]:
    """One S3 backend for the module (making a boto3 client takes ~0.4 s); every test still
    gets its own bucket. Small parts, so that the large-object test uploads in parts."""
    backend = S3Backend(
        make_s3_store_config(s3_server, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    )
    yield backend
    backend.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend = _make_backend(request.param, request, tmp_path)
    try:
        yield Store(backend, unique_container())
    finally:
        if request.param != "s3":
            backend.close()


def test_backends_conform_to_protocol(tmp_path: Path) -> None:
    backend: StorageBackend = LocalBackend(tmp_path)
    memory: StorageBackend = MemoryBackend()
    wrapped: StorageBackend = RetryingBackend(LimitedBackend(MeteredBackend(memory), 2))
    for candidate in (backend, memory, wrapped):
        assert isinstance(candidate, StorageBackend)


def test_put_get_round_trip(store: Store) -> None:
    store.backend.put(store.key("b1/chunk.0000"), b"hello world")
    assert store.backend.get(store.key("b1/chunk.0000")) == b"hello world"


def test_empty_object(store: Store) -> None:
    store.backend.put(store.key("empty"), b"")
    assert store.backend.get(store.key("empty")) == b""
    assert store.backend.stat(store.key("empty")) == ObjectInfo(key=store.key("empty"), size=0)


def test_stat_reports_size(store: Store) -> None:
    store.backend.put(store.key("a/b/c"), b"x" * 1234)
    assert store.backend.stat(store.key("a/b/c")) == ObjectInfo(key=store.key("a/b/c"), size=1234)


def test_overwrite_replaces_object(store: Store) -> None:
    key = store.key("manifest.json")
    store.backend.put(key, b"first version, longer")
    store.backend.put(key, b"second")
    assert store.backend.get(key) == b"second"
    assert store.backend.stat(key).size == 6
    assert store.backend.list(store.container) == [key]


def test_list_is_sorted_and_filtered_by_prefix(store: Store) -> None:
    names = ["b/2", "a/10", "a/1", "ab", "a/sub/x", "c"]
    for name in names:
        store.backend.put(store.key(name), name.encode())
    assert store.backend.list(store.container) == [store.key(n) for n in sorted(names)]
    assert store.backend.list(store.key("a/")) == [store.key(n) for n in ["a/1", "a/10", "a/sub/x"]]
    assert store.backend.list(store.key("a")) == [
        store.key(n) for n in ["a/1", "a/10", "a/sub/x", "ab"]
    ]
    assert store.backend.list(store.key("a/1")) == [store.key("a/1"), store.key("a/10")]
    assert store.backend.list(store.key("a/sub/")) == [store.key("a/sub/x")]
    assert store.backend.list(store.key("zzz")) == []


def test_list_missing_container_is_empty(store: Store) -> None:
    assert store.backend.list(store.container) == []
    assert store.backend.list(store.key("some/prefix")) == []


def test_list_does_not_cross_containers(store: Store) -> None:
    other = unique_container()
    store.backend.put(store.key("x"), b"1")
    store.backend.put(f"{other}/x", b"2")
    assert store.backend.list(store.container) == [store.key("x")]
    assert store.backend.list(other) == [f"{other}/x"]


def test_delete_removes_and_is_idempotent(store: Store) -> None:
    key = store.key("backup/1/chunk")
    store.backend.put(key, b"data")
    store.backend.put(store.key("backup/1/other"), b"keep")
    store.backend.delete(key)
    store.backend.delete(key)
    store.backend.delete(store.key("never/existed"))
    with pytest.raises(ObjectNotFoundError):
        store.backend.get(key)
    assert store.backend.list(store.container) == [store.key("backup/1/other")]
    store.backend.delete(store.key("backup/1/other"))
    assert store.backend.list(store.container) == []
    store.backend.put(key, b"again")
    assert store.backend.get(key) == b"again"


def test_delete_in_missing_container_is_fine(store: Store) -> None:
    store.backend.delete(store.key("nothing/here"))


def test_missing_object_raises_not_found(store: Store) -> None:
    with pytest.raises(ObjectNotFoundError):
        store.backend.get(store.key("missing"))
    with pytest.raises(ObjectNotFoundError):
        store.backend.stat(store.key("missing"))
    store.backend.put(store.key("present"), b"1")
    with pytest.raises(ObjectNotFoundError):
        store.backend.get(store.key("missing"))
    with pytest.raises(ObjectNotFoundError):
        store.backend.stat(store.key("present/child"))


ROUND_TRIP_NAMES = [
    "backups/5f1c/manifest.json",
    "with space/and+plus&amp=eq",
    "%2e%2e/literal-percent",
    "question?hash#semi;colon:at@",
    "ünïcødé/日本語/emoji-🙂",
    "tilde~dash-dot.under_score",
]


@pytest.mark.parametrize("name", ROUND_TRIP_NAMES)
def test_url_round_trip(store: Store, name: str) -> None:
    key = store.key(name)
    store.backend.put(key, name.encode())
    url = store.backend.url_for(key)
    assert store.backend.key_for_url(url) == key
    assert store.backend.get(store.backend.key_for_url(url) or "") == name.encode()
    assert store.backend.list(store.key(name)) == [key]


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/x/y",
        "memory://some-other-store/c/x",
        "file:///definitely/not/under/the/root/c/x",
        "s3x://bucket/key",
    ],
)
def test_foreign_url_is_not_claimed(store: Store, url: str) -> None:
    assert store.backend.key_for_url(url) is None


INVALID_KEYS = [
    "",
    "/leading-slash/x",
    "container-only",
    "container-only/",
    "c/trailing/",
    "c//double",
    "c/../escape",
    "c/./dot",
    "../x",
    "c/a/..",
    "c/nul\x00byte",
    "c/newline\nhere",
    "c/del\x7f",
    "c/back\\slash",
    "bad container/x",
    "c/" + "/".join(["x" * 255] * 4 + ["x"]),
    "c/" + "x" * 256,
    "x" * 256 + "/y",
    "c/\ud800lone-surrogate",
]


@pytest.mark.parametrize("key", INVALID_KEYS, ids=range(len(INVALID_KEYS)))
def test_invalid_keys_are_refused(store: Store, key: str) -> None:
    for call in (
        lambda: store.backend.put(key, b"x"),
        lambda: store.backend.get(key),
        lambda: store.backend.stat(key),
        lambda: store.backend.delete(key),
        lambda: store.backend.url_for(key),
    ):
        with pytest.raises(InvalidKeyError):
            call()


@pytest.mark.parametrize("prefix", ["", "/x", "c/../x", "c/a\x00", "bad container"])
def test_invalid_prefixes_are_refused(store: Store, prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.backend.list(prefix)


def test_longest_name_is_accepted(store: Store) -> None:
    key = store.key("/".join(["n" * 255] * 3 + ["n" * 254, "n"]))
    assert len(key.split("/", 1)[1]) == 1024
    store.backend.put(key, b"long")
    assert store.backend.get(key) == b"long"


def test_unicode_keys_are_not_normalized(store: Store) -> None:
    composed, decomposed = store.key("caf\u00e9"), store.key("cafe\u0301")
    store.backend.put(composed, b"nfc")
    store.backend.put(decomposed, b"nfd")
    assert store.backend.get(composed) == b"nfc"
    assert store.backend.get(decomposed) == b"nfd"
    assert store.backend.list(store.container) == sorted([composed, decomposed])


def test_large_object(store: Store) -> None:
    data = os.urandom(8 * MiB + 4321)
    key = store.key("large/chunk.0001")
    store.backend.put(key, data)
    assert store.backend.stat(key).size == len(data)
    got = store.backend.get(key)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert store.backend.list(store.key("large/")) == [key]


def test_concurrent_puts_from_threads(store: Store) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        try:
            barrier.wait()
            for i in range(5):
                store.backend.put(store.key(f"t{n}/obj{i}"), f"{n}:{i}".encode() * 100)
            store.backend.put(store.key("shared"), f"{n}".encode())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    expected = sorted([store.key(f"t{n}/obj{i}") for n in range(8) for i in range(5)])
    assert store.backend.list(store.container) == sorted([*expected, store.key("shared")])
    for n in range(8):
        assert store.backend.get(store.key(f"t{n}/obj4")) == f"{n}:4".encode() * 100
    assert store.backend.get(store.key("shared")) in {str(n).encode() for n in range(8)}


def test_check_succeeds(store: Store) -> None:
    store.backend.check()
