"""BackupWriter: a file-like sink that cuts a stream into sealed chunks in parallel."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

from strongroom.pipeline import compress, crypto
from strongroom.pipeline.checksum import sha256_hex
from strongroom.pipeline.chunk import seal_chunk
from strongroom.pipeline.keys import MasterKey
from strongroom.pipeline.manifest import (
    COMPRESSION_ALGORITHM,
    ENCRYPTION_ALGORITHM,
    MANIFEST_VERSION,
    MAX_CHUNK_SIZE,
    ChunkRef,
    CompressionParams,
    EncryptionParams,
    Manifest,
    check_engine,
)

DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024


class _Aborted(Exception):
    """Internal: a task noticed the writer was aborted or had failed."""


class BackupWriter:
    """Cut a byte stream into chunks; compress, seal, checksum and emit them in a thread pool.

    ``emit(index, blob)`` is called from pool threads, concurrently and in any order; it
    should store the blob (retrying as it sees fit) and return, or raise. At most
    ``max_in_flight`` chunks are queued or being processed at any time, and :meth:`write`
    blocks while that many are pending, so memory stays near
    ``(max_in_flight + 1 + 2 * workers) * chunk_size`` whatever the stream length (each
    pending chunk's plaintext, the buffer being filled, and each worker's compressed
    and sealed output).

    The newest full chunk is held back until more data arrives or :meth:`close` is called,
    because only then is it known whether it is the final chunk.
    """

    def __init__(
        self,
        *,
        backup_id: str,
        master_key: MasterKey,
        emit: Callable[[int, bytes], None],
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        level: int = compress.DEFAULT_LEVEL,
        workers: int = 2,
        max_in_flight: int = 4,
    ) -> None:
        if not backup_id:
            raise ValueError("backup_id must not be empty")
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be 1..{MAX_CHUNK_SIZE}, got {chunk_size}")
        if workers < 1 or max_in_flight < 1:
            raise ValueError("workers and max_in_flight must be at least 1")
        self._backup_id = backup_id
        self._level = compress.check_level(level)
        self._chunk_size = chunk_size
        self._emit = emit
        self._data_key = crypto.random_key()
        self._cipher = crypto.aead_cipher(self._data_key)
        self._key_id = master_key.key_id
        self._wrapped_key = master_key.wrap(self._data_key, backup_id=backup_id)

        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="strongroom-seal")
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._lock = threading.Lock()
        self._futures: list[Future[ChunkRef]] = []
        self._error: BaseException | None = None
        self._stop = threading.Event()  # set on abort or after the first failure

        self._buf = bytearray(chunk_size)
        self._fill = 0
        self._next_index = 0
        self._refs: list[ChunkRef] | None = None
        self._aborted = False
        self.plain_bytes = 0
        self.stored_bytes = 0

    def __repr__(self) -> str:
        return f"BackupWriter(backup_id={self._backup_id!r}, chunks={self._next_index})"

    # -- file-like sink -----------------------------------------------------------------

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Accept ``data``; returns its length. Raises the first seal/emit failure."""
        self._check_open()
        view = memoryview(data).cast("B")
        n = view.nbytes
        pos = 0
        while pos < n:
            if self._fill == self._chunk_size:
                # The held full chunk is not the last one: hand it over.
                self._submit(final=False)
            take = min(self._chunk_size - self._fill, n - pos)
            self._buf[self._fill : self._fill + take] = view[pos : pos + take]
            self._fill += take
            pos += take
        self.plain_bytes += n
        return n

    def flush(self) -> None:
        """No-op (chunks are cut at fixed sizes); present for file-like callers."""

    def close(self) -> list[ChunkRef]:
        """Seal the final chunk, wait for every emit, return the chunk list in index order.

        Raises the first seal/emit failure (after stopping the remaining work). Calling it
        again returns the same list, or raises the same failure.
        """
        if self._refs is not None:
            return self._refs
        self._raise_failure()
        if self._aborted:
            raise ValueError("BackupWriter was aborted")
        try:
            self._submit(final=True)
            for future in self._futures:
                with contextlib.suppress(BaseException):
                    future.result()
            self._raise_failure()
        except BaseException:
            self.abort()
            raise
        self._pool.shutdown(wait=True)
        refs = sorted((f.result() for f in self._futures), key=lambda r: r.index)
        self._futures = []
        self._refs = refs
        return refs

    def abort(self) -> None:
        """Stop: drop queued chunks and wait for running ones; no emit happens after return."""
        if self._refs is not None:
            return
        self._aborted = True
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- manifest -----------------------------------------------------------------------

    def manifest(
        self,
        *,
        project_id: str,
        instance_id: str | None,
        datastore: str | None,
        datastore_version: str | None,
        engine: dict[str, Any],
        parent_id: str | None,
        parent_manifest_sha256: str | None,
        created: str,
    ) -> Manifest:
        """The signed manifest of the chunks written; only after :meth:`close`."""
        if self._refs is None:
            raise ValueError("BackupWriter.manifest() needs close() first")
        refs = self._refs
        manifest = Manifest(
            format_version=MANIFEST_VERSION,
            backup_id=self._backup_id,
            project_id=project_id,
            instance_id=instance_id,
            datastore=datastore,
            datastore_version=datastore_version,
            engine=check_engine(engine),
            parent_id=parent_id,
            parent_manifest_sha256=parent_manifest_sha256,
            created=created,
            chunk_size=self._chunk_size,
            chunks=list(refs),
            plain_bytes=sum(r.plain_size for r in refs),
            stored_bytes=sum(r.size for r in refs),
            compression=CompressionParams(COMPRESSION_ALGORITHM, self._level),
            encryption=EncryptionParams(ENCRYPTION_ALGORITHM, self._key_id, self._wrapped_key),
        ).signed(self._data_key)
        # Validate exactly as a reader will, so a bad field fails the backup, not the restore.
        return Manifest.from_bytes(manifest.to_bytes())

    # -- internals ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._aborted:
            raise ValueError("write to an aborted BackupWriter")
        if self._refs is not None:
            raise ValueError("write to a closed BackupWriter")
        self._raise_failure()

    def _raise_failure(self) -> None:
        with self._lock:
            error = self._error
        if error is not None:
            raise error

    def _submit(self, *, final: bool) -> None:
        """Hand the current buffer to the pool (blocking while max_in_flight are pending)."""
        self._slots.acquire()
        try:
            self._raise_failure()
            if self._aborted:
                raise ValueError("write to an aborted BackupWriter")
            index = self._next_index
            plain = memoryview(self._buf)[: self._fill]
            future = self._pool.submit(self._seal_and_emit, index, plain, final)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _f: self._slots.release())
        self._futures.append(future)
        self._next_index += 1
        if not final:
            self._buf = bytearray(self._chunk_size)
            self._fill = 0

    def _seal_and_emit(self, index: int, plain: memoryview, final: bool) -> ChunkRef:
        try:
            if self._stop.is_set():
                raise _Aborted
            blob = seal_chunk(
                self._cipher,
                plain,
                backup_id=self._backup_id,
                index=index,
                final=final,
                level=self._level,
            )
            ref = ChunkRef(index, len(blob), plain.nbytes, sha256_hex(blob))
            del plain
            if self._stop.is_set():
                raise _Aborted
            self._emit(index, blob)
        except _Aborted:
            raise
        except BaseException as exc:
            with self._lock:
                if self._error is None:
                    self._error = exc
            self._stop.set()
            raise
        with self._lock:
            self.stored_bytes += ref.size
        return ref
