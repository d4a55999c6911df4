"""Run a database tool as a subprocess: argv lists (never a shell), secrets through the
environment or files, stdout streamed, stderr kept (bounded) for the failure reason.

What a tool prints may be the tenant's to choose (a file of its data directory that the
tool quotes, a message naming its objects): no output is held in memory whole."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from strongroom.engines.base import ByteSink, ByteSource
from strongroom.engines.errors import EngineError

STDERR_TAIL_LINES = 40
STDERR_LINE_MAX = 4096  # bytes of one stderr line kept; the rest of it is dropped
OUTPUT_MAX = 64 * 1024  # bytes of each stream that run() keeps
COPY_BUFFER = 1024 * 1024
DRAIN_WAIT = 5.0  # seconds to read what is left in the pipes once the tool is gone
_POLL_MS = 500  # how often a copy with nothing to read looks whether its tool is gone


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    stdout: bytes
    stderr: str


class ProcessError(EngineError):
    """A tool exited non-zero, timed out or could not be started."""

    def __init__(self, tool: str, message: str, stderr: str = "") -> None:
        detail = f": {stderr.strip()}" if stderr.strip() else ""
        super().__init__(f"{tool} {message}{detail}")
        self.tool = tool
        self.stderr = stderr


def _tool_name(argv: Sequence[str | os.PathLike[str]]) -> str:
    return Path(str(argv[0])).name


# What a tool inherits from the service: nothing but these. A managed server's environment
# is readable by its own user (/proc/PID/environ), and so by a tenant that is superuser
# there: the service's settings, tokens and keys must never reach it.
INHERITED = ("PATH", "TZ", "TMPDIR")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def minimal_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A tool's whole environment: PATH (and TZ, TMPDIR) from the service, the C locale
    (stable output to parse and quote), and ``env``."""
    merged = {name: os.environ[name] for name in INHERITED if name in os.environ}
    merged.setdefault("PATH", DEFAULT_PATH)
    # Locale-independent tool output keeps parsing and failure reasons stable.
    merged["LC_ALL"] = "C"
    merged["LANG"] = "C"
    if env:
        merged.update(env)
    return merged


_merged_env = minimal_env


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = 600,
    input_bytes: bytes | None = None,
    check: bool = True,
    keep_stdout: bool = True,
) -> ProcessResult:
    """Run a short tool to completion. Its stdout's first and its stderr's last
    :data:`OUTPUT_MAX` bytes are kept, the rest read and dropped; ``keep_stdout=False``:
    stdout goes to ``/dev/null``."""
    tool = _tool_name(argv)
    try:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            env=_merged_env(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL if input_bytes is None else subprocess.PIPE,
            stdout=subprocess.PIPE if keep_stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise ProcessError(tool, "is not installed") from exc
    readers = [_Kept(proc.stderr, tail=True)]
    if proc.stdout is not None:
        readers.append(_Kept(proc.stdout, tail=False))
    if proc.stdin is not None:  # from a thread: a tool that does not read cannot stall us
        threading.Thread(target=_feed, args=(proc.stdin, input_bytes), daemon=True).start()
    for reader in readers:
        reader.start()
    try:
        returncode = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.wait()
        raise ProcessError(tool, f"did not finish within {timeout:.0f} s") from exc
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        drained_by = time.monotonic() + DRAIN_WAIT  # a program the tool left may hold a pipe
        for reader in readers:
            reader.join(max(0.0, drained_by - time.monotonic()))
    stderr = readers[0].value().decode("utf-8", "replace")
    stdout = readers[1].value() if len(readers) > 1 else b""
    if check and returncode != 0:
        raise ProcessError(tool, f"exited with status {returncode}", _tail(stderr))
    return ProcessResult(returncode, stdout, stderr)


class _Kept(threading.Thread):
    """Reads a stream to its end, keeping its first (or, ``tail``, its last)
    :data:`OUTPUT_MAX` bytes."""

    def __init__(self, stream: IO[bytes] | None, *, tail: bool) -> None:
        super().__init__(daemon=True)
        assert stream is not None
        self._stream = stream
        self._tail = tail
        self._kept = bytearray()

    def run(self) -> None:
        with self._stream:
            while chunk := self._stream.read1(OUTPUT_MAX):  # type: ignore[attr-defined]
                if self._tail:
                    self._kept += chunk
                    del self._kept[:-OUTPUT_MAX]
                elif len(self._kept) < OUTPUT_MAX:
                    self._kept += chunk[: OUTPUT_MAX - len(self._kept)]

    def value(self) -> bytes:
        return bytes(self._kept)


def _feed(stdin: IO[bytes], data: bytes | None) -> None:
    with contextlib.suppress(BrokenPipeError), stdin:
        stdin.write(data or b"")


def _tail(text: str) -> str:
    lines = text.strip().splitlines()[-STDERR_TAIL_LINES:]
    return "\n".join(line[:STDERR_LINE_MAX] for line in lines)


class StderrCollector(threading.Thread):
    def __init__(self, stream: object) -> None:
        super().__init__(daemon=True)
        self._stream = stream
        self.lines: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def run(self) -> None:
        # readline with a size: a line without an end is not gathered in memory whole.
        cut = False
        while raw := self._stream.readline(STDERR_LINE_MAX):  # type: ignore[attr-defined]
            if not cut:
                self.lines.append(raw.decode("utf-8", "replace").rstrip())
            cut = not raw.endswith(b"\n")

    def text(self) -> str:
        return "\n".join(self.lines)


def stream_out(
    argv: Sequence[str | os.PathLike[str]],
    sink: ByteSink,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
    pass_fds: Sequence[int] = (),
) -> str:
    """Run a tool and copy its stdout into ``sink`` as it comes. Returns stderr's tail.
    ``pass_fds`` are descriptors the tool inherits (an option file it reads as /dev/fd/N).

    Raises ``ProcessError`` when the tool fails, and re-raises the sink's own exception
    after killing the tool when the sink fails."""
    return _stream(
        argv,
        env=env,
        cwd=cwd,
        timeout=timeout,
        sink=sink,
        on_start=on_start,
        pass_fds=pass_fds,
    )


def stream_in(
    argv: Sequence[str | os.PathLike[str]],
    source: ByteSource,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
) -> str:
    """Run a tool feeding ``source`` into its stdin until the source ends."""
    return _stream(argv, env=env, cwd=cwd, timeout=timeout, source=source)


def _stream(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None,
    cwd: Path | None,
    timeout: float | None,
    sink: ByteSink | None = None,
    source: ByteSource | None = None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
    pass_fds: Sequence[int] = (),
) -> str:
    tool = _tool_name(argv)
    try:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            env=_merged_env(env),
            cwd=cwd,
            stdin=subprocess.PIPE if source is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if sink is not None else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError as exc:
        raise ProcessError(tool, "is not installed") from exc
    if on_start is not None:
        on_start(proc)
    collector = StderrCollector(proc.stderr)
    collector.start()
    timer = _kill_after(proc, timeout)
    try:
        if sink is not None:
            assert proc.stdout is not None
            with proc.stdout:
                _copy_out(proc, proc.stdout.fileno(), sink)
        if source is not None:
            assert proc.stdin is not None
            try:
                while chunk := source.read(COPY_BUFFER):
                    proc.stdin.write(chunk)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # the tool stopped reading: its exit status and stderr say why
        returncode = proc.wait()
    except BaseException:
        kill_group(proc)
        raise
    finally:
        if timer is not None:
            timer.cancel()
        collector.join(timeout=5)
    if timer is not None and timer.fired:
        raise ProcessError(tool, f"did not finish within {timeout:.0f} s", collector.text())
    if returncode != 0:
        raise ProcessError(tool, f"exited with status {returncode}", collector.text())
    return collector.text()


def _copy_out(proc: subprocess.Popen[bytes], fd: int, sink: ByteSink) -> None:
    """The tool's output into ``sink`` until its end, or until ``DRAIN_WAIT`` seconds after
    the tool is gone: a program it left (a tool run as a tenant's OS user may leave one, or
    that user may take a copy of the pipe from ``/proc/PID/fd``) would keep the pipe open,
    and fed, for ever."""
    ready = select.poll()
    ready.register(fd, select.POLLIN)
    gone_at: float | None = None
    while True:
        if gone_at is None and proc.poll() is not None:
            gone_at = time.monotonic()
        if gone_at is not None and time.monotonic() - gone_at > DRAIN_WAIT:
            return
        if not ready.poll(_POLL_MS):
            continue
        chunk = os.read(fd, COPY_BUFFER)
        if not chunk:
            return
        sink.write(chunk)


class _Timer(threading.Timer):
    fired = False


def _kill_after(proc: subprocess.Popen[bytes], timeout: float | None) -> _Timer | None:
    if timeout is None:
        return None

    def fire() -> None:
        timer.fired = True
        kill_group(proc)

    timer = _Timer(timeout, fire)
    timer.daemon = True
    timer.start()
    return timer


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the tool's whole process group (it runs in a session of its own) and reap it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
