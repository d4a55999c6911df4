"""prometheus_client's multi-process mode: every process of one listener writes its values
to memory-mapped files in one private directory, which the listener's process sums.

The directory is ``data_dir/metrics/<role>-<port>`` (0700, emptied at start), so an API
and a worker on one host, each with its own metrics port, never mix or wipe each other's
files. It must be prepared before prometheus_client is imported in this process."""

from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


class MetricsDirError(Exception):
    """The directory cannot be made private; the message says why."""


def prepare(data_dir: Path, *, role: str, port: int) -> Path:
    """Make (or empty) the private directory and point this process and its children at
    it; returns it."""
    parent = data_dir / "metrics"
    path = parent / f"{role}-{port}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)  # a first start: bootstrap sets its mode
    except OSError as exc:
        raise MetricsDirError(f"cannot make {data_dir}: {exc.strerror}") from None
    for directory in (parent, path):
        _private_directory(directory)
    for entry in os.scandir(path):
        # The files of the previous run: their counters would be summed with this one's.
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
    if "prometheus_client" in sys.modules and ENV not in os.environ:
        # Imported already (a command run inside another program): its values stay in
        # this process, which then serves them itself.
        return path
    os.environ[ENV] = str(path)
    return path


def _private_directory(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise MetricsDirError(f"cannot make {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise MetricsDirError(f"{path} is not a directory (a link or a file is in its place)")
    if info.st_uid != os.geteuid():
        raise MetricsDirError(f"{path} belongs to uid {info.st_uid}, not to the service")
    os.chmod(path, 0o700, follow_symlinks=False)


def active() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def forget_dead_processes(path: Path) -> None:
    """Drop the live-gauge files of processes that have exited (a restarted API worker):
    their ``livesum`` gauges would otherwise count forever."""
    from prometheus_client import multiprocess

    pids: set[int] = set()
    for entry in os.scandir(path):
        if entry.name.startswith("gauge_live"):
            tail = entry.name.rsplit("_", 1)[-1].removesuffix(".db")
            if tail.isdigit():
                pids.add(int(tail))
    for pid in pids:
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, str(path))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
