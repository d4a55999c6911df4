"""The embedded job queue: a pool of worker threads in the service process.

Jobs are rows in the metadata database before they are queued here, so nothing is lost
with this in-memory queue: on start, the service finds unfinished rows and runs or fails
them (see ``JobHandlers.recover``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from strongroom.domain.model import JobId

log = logging.getLogger(__name__)


class InProcessJobQueue:
    def __init__(self, run: Callable[[JobId], None], *, workers: int = 2) -> None:
        self._run = run
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="strongroom-job")
        self._pending: set[Future[None]] = set()
        self._held: set[JobId] = set()  # submitted and not yet finished
        self._lock = threading.Lock()
        self._closed = False
        self._open = threading.Event()
        self._open.set()

    def submit(self, job_id: JobId, route: str = "local") -> None:
        """Every job runs here, whatever its route: this process is the only host. A job
        already waiting or running here is not queued twice."""
        with self._lock:
            if self._closed:
                log.warning("job %s not started: the service is shutting down", job_id)
                return
            if job_id in self._held:
                return
            future = self._pool.submit(self._run_safely, job_id)
            self._pending.add(future)
            self._held.add(job_id)
        future.add_done_callback(lambda done: self._forget(done, job_id))

    def holds(self, job_id: JobId) -> bool:
        """True while ``job_id`` waits or runs here."""
        with self._lock:
            return job_id in self._held

    def hold(self) -> None:
        """Keep submitted jobs waiting (maintenance; tests that need a backup to stay NEW)."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def _run_safely(self, job_id: JobId) -> None:
        self._open.wait()
        if self._closed:
            return
        try:
            self._run(job_id)
        except Exception:
            log.exception("job %s crashed", job_id)

    def _forget(self, future: Future[None], job_id: JobId) -> None:
        with self._lock:
            self._pending.discard(future)
            self._held.discard(job_id)

    def idle(self) -> bool:
        with self._lock:
            return not self._pending

    def shutdown(self) -> None:
        """Stop taking jobs and wait for the running ones; queued ones stay QUEUED in the
        database and run on the next start."""
        with self._lock:
            self._closed = True
        self._open.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
