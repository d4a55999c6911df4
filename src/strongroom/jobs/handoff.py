"""Jobs of `strongroom serve --workers N`: the API processes hand job ids to the one process
that runs the jobs.

The job row is committed before ``submit`` is called, so the hand-off carries only its id,
as one datagram on a Unix socket in the data directory (mode 0600; the directory is the
service's own). The receiving process runs the job from its row, as it would one it
submitted itself: a datagram that names no job, or a finished one, changes nothing. A lost
hand-off (the socket's buffer full, the socket gone) leaves the job QUEUED, and the job
process's ``Redelivery`` finds it there and runs it."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

from strongroom.domain.model import JobId, JobState
from strongroom.domain.ports import Clock, JobQueue, UnitOfWorkFactory
from strongroom.jobs.inprocess import InProcessJobQueue

log = logging.getLogger(__name__)

SOCKET_NAME = "jobs.sock"
ENV = "STRONGROOM_JOB_SOCKET"  # where the API processes find it
_MAX_PATH = 107  # sun_path holds 108 bytes with its terminating zero
_STAGING = "/.jobs-xxxxxxxx/s"  # where the socket is bound before it is renamed into place
_STALE = (errno.ECONNREFUSED, errno.ENOTCONN, errno.EBADF)  # a connection to a gone inbox
# A staging directory older than this was left by a process killed while binding (which
# takes microseconds); a younger one may be another process's, binding now.
LEFTOVER_AFTER_SECONDS = 60


class JobInbox:
    """Receives job ids and submits them to ``queue`` (the in-process pool)."""

    def __init__(self, path: Path, queue: JobQueue, *, own_directory: bool = False) -> None:
        self.path = path
        self._queue = queue
        self._own_directory = own_directory  # made for the socket: removed with it
        self._sock = _bound_privately(path)
        self._closing = False
        self._thread = threading.Thread(target=self._receive, name="job-inbox", daemon=True)

    @classmethod
    def in_data_dir(cls, data_dir: Path, queue: JobQueue) -> JobInbox:
        """The inbox at ``jobs.sock`` in the data directory, or in a private temporary
        directory when that path is too long for a Unix socket address."""
        path = data_dir.absolute() / SOCKET_NAME
        if len(os.fsencode(path.parent)) + len(_STAGING) <= _MAX_PATH:
            return cls(path, queue)
        private = Path(tempfile.mkdtemp(prefix="strongroom-"))
        return cls(private / SOCKET_NAME, queue, own_directory=True)

    def start(self) -> None:
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                data = self._sock.recv(64)
            except OSError:
                return  # closed
            if not data and self._closing:
                return
            try:
                job_id = str(uuid.UUID(data.decode("ascii")))
            except (UnicodeDecodeError, ValueError):
                log.warning("job hand-off ignored: not a job id")
                continue
            try:
                self._queue.submit(JobId(job_id), "local")
            except Exception:  # one job's failure must not stop the inbox for the others
                log.exception("job %s handed over but not submitted", job_id)

    def close(self) -> None:
        # A datagram to itself wakes the receiving thread; then the socket is closed.
        self._closing = True
        with contextlib.suppress(OSError):
            self._sock.sendto(b"", str(self.path))
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._own_directory:
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()


def _bound_privately(path: Path) -> socket.socket:
    """A datagram socket bound at ``path`` with mode 0600 from the start: only the
    service's user may send to it. It is bound in a new directory of mode 0700 beside
    ``path``, then renamed into place (over one a killed process left). The process's
    umask is left alone: other threads of the process create files meanwhile."""
    remove_leftover_staging(path.parent)
    staging = Path(tempfile.mkdtemp(prefix=".jobs-", dir=path.parent))
    bound = staging / "s"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(bound))
        os.chmod(bound, 0o600)
        os.replace(bound, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            bound.unlink()
        raise
    finally:
        staging.rmdir()
    return sock


def remove_leftover_staging(directory: Path, *, now: float | None = None) -> list[str]:
    """Remove the staging directories (and the socket in one) that a process killed
    between binding and renaming left in ``directory``; returns their names. Only
    directories, never what a link points to, and only those older than
    ``LEFTOVER_AFTER_SECONDS``."""
    now = time.time() if now is None else now
    removed: list[str] = []
    for entry in directory.glob(".jobs-*"):
        try:
            info = entry.lstat()
            if not stat.S_ISDIR(info.st_mode) or now - info.st_mtime < LEFTOVER_AFTER_SECONDS:
                continue
            (entry / "s").unlink(missing_ok=True)
            entry.rmdir()
        except OSError as exc:  # gone meanwhile, or not ours to remove: left as it is
            log.debug("staging directory %s left: %s", entry.name, exc)
            continue
        removed.append(entry.name)
    return removed


class HandOffJobQueue:
    """The job queue of an API process of `serve --workers N`. Its socket is connected to
    the inbox: a send then waits, without spinning, while the inbox's queue is full."""

    def __init__(self, path: Path, *, timeout: float = 5) -> None:
        self._path = str(path)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    def submit(self, job_id: JobId, route: str = "local") -> None:
        data = str(job_id).encode("ascii")
        try:
            sock = self._connected()
            try:
                sock.send(data)
            except OSError as exc:
                if exc.errno not in _STALE:
                    raise
                # The inbox was made anew (refused once, then not connected), or another
                # thread found that first and closed this socket: connect again, once.
                self._disconnect(sock)
                self._connected().send(data)
        except OSError as exc:  # full until the timeout, or gone: the job stays QUEUED,
            # and the job process's Redelivery runs it
            log.error("job %s not handed to the job process: %s", job_id, exc)

    def _connected(self) -> socket.socket:
        with self._lock:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.settimeout(self._timeout)  # a request never waits long on a full inbox
                try:
                    sock.connect(self._path)
                except OSError:
                    sock.close()
                    raise
                self._sock = sock
            return self._sock

    def _disconnect(self, stale: socket.socket | None = None) -> None:
        """Close the connection (only if it is still ``stale``, when given: another
        thread may have connected anew meanwhile)."""
        with self._lock:
            if self._sock is not None and (stale is None or self._sock is stale):
                self._sock.close()
                self._sock = None

    def shutdown(self) -> None:
        self._disconnect()


class Redelivery:
    """The job process's remedy for a hand-off that never arrived: a job QUEUED for longer
    than ``after`` that neither waits nor runs in ``queue`` is submitted to it (run every
    ``after``, it finds a lost job between ``after`` and twice that). A job that arrives
    both ways still runs once (the pool holds an id once, and a job is claimed before it
    runs)."""

    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        clock: Clock,
        queue: InProcessJobQueue,
        after: timedelta,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._queue = queue
        self._after = after

    def run_once(self) -> list[JobId]:
        """Submit the stranded jobs; returns their ids."""
        with self._uow() as uow:
            waiting = uow.jobs.stale(JobState.QUEUED, self._clock.now() - self._after)
        stranded = [job.id for job in waiting if not self._queue.holds(job.id)]
        for job_id in stranded:
            log.warning("job %s is still QUEUED (a lost hand-off?); running it now", job_id)
            self._queue.submit(job_id, "local")
        return stranded
