"""Shared helpers: work directories, subprocess runs, measurement of a process tree."""

from __future__ import annotations

import contextlib
import os
import resource
import shlex
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
WORK = Path(os.environ.get("BENCH_WORK", str(BENCH_DIR / "work"))).resolve()
RSS_SAMPLE_INTERVAL = 0.02
WARM_BYTES = 6 << 30  # more than a restore writes at scale 150, with the server it starts


def warm_memory(limit: int = WARM_BYTES) -> float:
    """Write into (up to 90 % of) the machine's free memory in a child process, which then
    exits, so the next step gets pages that have been used; returns the seconds it took.

    A virtual machine whose memory the host backs lazily, like this one, charges a host
    fault for the first write into a page it never used, and hands freed pages back within
    a minute or two: writing 2 GB into such pages took 3.0 s of system time, the same again
    right after 0.35 s. A restore writes 2.4 GB into the page cache, so whichever tool ran
    first paid for fresh memory; run before each measured restore, this gives every tool
    pages that have been used, as on a long-running server."""
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    size = min(limit, int(free * 0.9))
    started = time.perf_counter()
    subprocess.run([PYTHON, "-c", f"b'\\x01' * {size}"], check=True)
    seconds = time.perf_counter() - started
    log(f"  wrote {size / 2**30:.1f} GiB of free memory in {seconds:.1f} s")
    return seconds


def prepare_restore() -> None:
    """Before each measured restore: the page cache dropped, then used memory
    (:func:`warm_memory`). Each tool then reads its backup from disk, as a restore of a
    backup taken days ago does, and writes into pages this VM has used.

    Without it the figures followed the machine's state more than the tools: as the
    rounds filled the page cache with backups and restored directories, less free
    memory was left to warm (0.8 GiB before the last restore of a run) and restores took
    their pages by eviction; and ext4 without a journal (as here) does not reuse an
    inode freed in the last 60 s while its inode table block is cached
    (``recently_deleted`` in fs/ext4/ialloc.c), so a restore right after the other
    tool's restored directory was removed spent up to 1 s of kernel time skipping them.
    Restored directories are also removed only after both tools' restores of a round."""
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")
    warm_memory()


def write_result(text: str, kind: str) -> Path:
    """Print a run's table and keep it as ``bench/results/<date>-<kind>.md``."""
    out_dir = BENCH_DIR / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"{time.strftime('%Y-%m-%d-%H%M')}-{kind}.md"
    out.write_text(text)
    print(text)
    log(f"written {out.relative_to(ROOT)}")
    return out


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    check: bool = True,
    timeout: float = 3600,
) -> subprocess.CompletedProcess[str]:
    """Run a command (as ``user`` through runuser when given); raise with its stderr."""
    full = [str(a) for a in argv]
    if user is not None:
        full = ["runuser", "-u", user, "--", *full]
    merged = dict(os.environ)
    if env:
        merged.update(env)
    result = subprocess.run(
        full, input=input_text, capture_output=True, text=True, env=merged, timeout=timeout
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"command failed ({result.returncode}): {shlex.join(full)}\n{result.stderr[-2000:]}"
        )
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def private_dir(path: Path, owner: str | None = None, mode: int = 0o700) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if owner is not None:
        import shutil

        shutil.chown(path, owner, owner)
    return path


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


@dataclass
class Sample:
    """One measured run of a command and everything it started and waited for."""

    wall: float
    cpu: float  # user + sys of the process tree (reaped descendants included)
    rss: int  # peak of the summed RSS of the live process tree, sampled
    rss_root: int = 0  # peak RSS of the measured process alone (the Python process)
    stdout: str = ""


def _tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """``(summed RSS of the tree, RSS of its root)``."""
    total = root = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    for p in procs:
        try:
            rss = p.memory_info().rss
        except psutil.Error:
            continue
        total += rss
        if p.pid == proc.pid:
            root = rss
    return total, root


def measure(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 3600,
) -> Sample:
    """Run ``argv`` (a shell pipeline when it is ``["bash", "-c", ...]``), sampling the
    summed RSS of its live process tree every 20 ms; CPU comes from ``wait4``, which counts
    the process and every descendant it (transitively) reaped."""
    merged = dict(os.environ)
    if env:
        merged.update(env)
    started = time.perf_counter()
    popen = subprocess.Popen(
        [str(a) for a in argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=merged,
        start_new_session=True,
    )
    peak = peak_root = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, peak_root
        try:
            proc = psutil.Process(popen.pid)
        except psutil.Error:
            return
        while not done.is_set():
            total, root = _tree_rss(proc)
            peak, peak_root = max(peak, total), max(peak_root, root)
            done.wait(RSS_SAMPLE_INTERVAL)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: out_chunks.append(popen.stdout.read()), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err_chunks.append(popen.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for t in readers:
        t.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.killpg(popen.pid, 9)
        time.sleep(0.005)
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    for t in readers:
        t.join()
    popen.returncode = os.waitstatus_to_exitcode(status)
    stdout = b"".join(out_chunks).decode("utf-8", "replace")
    stderr = b"".join(err_chunks).decode("utf-8", "replace")
    if popen.returncode != 0:
        raise RuntimeError(
            f"measured command failed ({popen.returncode}): {shlex.join(map(str, argv))}\n"
            f"{stderr[-3000:]}"
        )
    cpu = usage.ru_utime + usage.ru_stime
    rss = max(peak, usage.ru_maxrss * 1024)
    return Sample(wall=wall, cpu=cpu, rss=rss, rss_root=peak_root, stdout=stdout)


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class Series:
    """Repeated measurements of one figure."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def spread(self, fmt: str) -> str:
        if not self.values:
            return "-"
        med = format(self.median, fmt)
        if len(self.values) == 1:
            return med
        return f"{med} ({format(min(self.values), fmt)}-{format(max(self.values), fmt)})"
