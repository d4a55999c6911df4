"""BackupWriter: failures, abort, back-pressure and bounded memory."""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Callable

import pytest

from strongroom.pipeline import BackupWriter, FormatError, MasterKey

from .builders import CHUNK, compressible, incompressible


def make_writer(key: MasterKey, emit: Callable[[int, bytes], None], **kw: int) -> BackupWriter:
    kw.setdefault("chunk_size", CHUNK)
    return BackupWriter(backup_id="bk-1", master_key=key, emit=emit, **kw)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


class Boom(Exception):
    pass


def test_writer_emit_failure_surfaces_from_write(master_key: MasterKey) -> None:
    def emit(index: int, blob: bytes) -> None:
        if index == 2:
            raise Boom("upload of chunk 2 failed")

    writer = make_writer(master_key, emit, max_in_flight=1, workers=1)
    with pytest.raises(Boom, match="chunk 2"):
        for _ in range(20):
            writer.write(b"x" * CHUNK)
    with pytest.raises(Boom):
        writer.write(b"x")
    with pytest.raises(Boom):
        writer.close()
    with pytest.raises(Boom):  # close again: same failure
        writer.close()


def test_writer_emit_failure_surfaces_from_close(master_key: MasterKey) -> None:
    def emit(index: int, blob: bytes) -> None:
        raise Boom(f"chunk {index}")

    writer = make_writer(master_key, emit)
    writer.write(b"tiny")  # held back until close: no emit yet
    with pytest.raises(Boom, match="chunk 0"):
        writer.close()


def test_writer_stops_emitting_after_a_failure(master_key: MasterKey) -> None:
    emitted: list[int] = []
    gate = threading.Event()

    def emit(index: int, blob: bytes) -> None:
        if index == 0:
            gate.wait(5)
            raise Boom("first chunk failed")
        emitted.append(index)

    writer = make_writer(master_key, emit, workers=1, max_in_flight=4)
    for _ in range(4):
        writer.write(b"y" * CHUNK)  # chunks 0..2 queued behind the failing one
    gate.set()
    with pytest.raises(Boom):
        writer.close()
    assert emitted == []


def test_writer_abort_stops_emits(master_key: MasterKey) -> None:
    emitted: list[int] = []

    def emit(index: int, blob: bytes) -> None:
        time.sleep(0.01)
        emitted.append(index)

    writer = make_writer(master_key, emit, workers=2, max_in_flight=8)
    for _ in range(9):
        writer.write(b"a" * CHUNK)
    writer.abort()
    after_abort = len(emitted)
    time.sleep(0.1)
    assert len(emitted) == after_abort < 8
    with pytest.raises(ValueError, match="aborted"):
        writer.write(b"more")
    with pytest.raises(ValueError, match="aborted"):
        writer.close()


def test_writer_abort_unblocks_a_blocked_write(master_key: MasterKey) -> None:
    gate = threading.Event()

    def emit(index: int, blob: bytes) -> None:
        gate.wait(5)

    writer = make_writer(master_key, emit, workers=1, max_in_flight=1)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for _ in range(10):
                writer.write(b"b" * CHUNK)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=produce)
    thread.start()
    wait_for(lambda: writer.plain_bytes >= 2 * CHUNK)
    aborter = threading.Thread(target=writer.abort)
    aborter.start()
    gate.set()
    aborter.join(5)
    thread.join(5)
    assert not thread.is_alive() and not aborter.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


def test_writer_blocks_at_max_in_flight(master_key: MasterKey) -> None:
    gate = threading.Event()
    started: list[int] = []

    def emit(index: int, blob: bytes) -> None:
        started.append(index)
        gate.wait(5)

    writer = make_writer(master_key, emit, workers=2, max_in_flight=4)

    def produce() -> None:
        for _ in range(20):
            writer.write(b"c" * CHUNK)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    # 4 chunks in flight + 1 full chunk held in the buffer, then write() must block.
    wait_for(lambda: writer.plain_bytes == 5 * CHUNK and len(started) == 2)
    time.sleep(0.05)
    assert writer.plain_bytes == 5 * CHUNK
    assert thread.is_alive()
    gate.set()
    thread.join(5)
    refs = writer.close()
    assert [r.index for r in refs] == list(range(20))
    assert writer.plain_bytes == 20 * CHUNK
    assert writer.stored_bytes == sum(r.size for r in refs)


def test_writer_memory_is_bounded(master_key: MasterKey) -> None:
    chunk_size = 1 << 20
    block = compressible(chunk_size // 2) + incompressible(chunk_size // 2)
    total = 200 * len(block)  # 200 MiB
    writer = BackupWriter(
        backup_id="bk-mem",
        master_key=master_key,
        emit=lambda i, b: None,
        chunk_size=chunk_size,
        workers=2,
        max_in_flight=4,
    )
    tracemalloc.start()
    try:
        for _ in range(200):
            writer.write(block)
        refs = writer.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert writer.plain_bytes == total and len(refs) == 200
    # buffers: 4 in flight + 1 filling, each plaintext plus its sealed blob
    assert peak < 12 * chunk_size, f"peak {peak / 2**20:.1f} MiB"


def test_writer_close_is_idempotent_and_manifest_needs_close(master_key: MasterKey) -> None:
    writer = make_writer(master_key, lambda i, b: None)
    with pytest.raises(ValueError, match="close"):
        writer.manifest(
            project_id="p",
            instance_id=None,
            datastore=None,
            datastore_version=None,
            engine={},
            parent_id=None,
            parent_manifest_sha256=None,
            created="2024-01-01T00:00:00",
        )
    writer.write(b"abc")
    refs = writer.close()
    assert writer.close() == refs
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")


def test_writer_rejects_engine_metadata_that_is_not_json(master_key: MasterKey) -> None:
    writer = make_writer(master_key, lambda i, b: None)
    writer.close()
    with pytest.raises(FormatError, match="engine"):
        writer.manifest(
            project_id="p",
            instance_id=None,
            datastore=None,
            datastore_version=None,
            engine={"lsn": (1, 2)},
            parent_id=None,
            parent_manifest_sha256=None,
            created="2024-01-01T00:00:00",
        )


@pytest.mark.parametrize(
    "kw", [{"chunk_size": 0}, {"level": 0}, {"level": 23}, {"workers": 0}, {"max_in_flight": 0}]
)
def test_writer_rejects_bad_settings(master_key: MasterKey, kw: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        make_writer(master_key, lambda i, b: None, **kw)
