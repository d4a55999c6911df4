"""The MariaDB programs on this host: finding them, their failure reasons, their files.

``mariadbd``, ``mariadb-install-db``, ``mariabackup`` and ``mbstream`` must come from one
release series (mariabackup backs up its own series only), and the server must be MariaDB
(not MySQL). A tool's failure reason is its status and the stderr lines that say what went
wrong, cleaned of secrets.

Tools that run as an instance's OS user (the tenant's) get their option file, which holds a
password, as a descriptor: a sealed memory file with no name on any file system, inherited
as ``--defaults-file=/dev/fd/N``. The tool reopens it through its own descriptor table (a
fresh offset each time: mariabackup reads the file twice, so a pipe would not do); another
process of that user reaches it only through the tool's ``/proc/PID/fd``, as it reaches the
tool's memory, and only while the tool runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from strongroom.engines import beneath, process
from strongroom.engines.errors import EngineError
from strongroom.engines.mariadb import metadata

SEARCH_PATH = ("/usr/sbin", "/usr/local/sbin", "/usr/libexec", "/usr/local/mysql/bin")
_ERROR_LINE = re.compile(
    r"error|fatal|failed|cannot|can't|denied|gone away|invalid|corrupt|mismatch", re.IGNORECASE
)
MAX_TOOL_FILE = 1 << 20
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


@dataclass(frozen=True)
class Tools:
    mariadbd: str
    install_db: str
    mariabackup: str
    mbstream: str
    server_version: str  # "10.11.19-MariaDB-0+deb12u1"
    series: str  # "10.11"


def find_tools() -> Tools | None:
    """The installed programs, or ``None`` when one is missing or they do not match."""
    mariadbd = _which("mariadbd", "mysqld")
    install_db = _which("mariadb-install-db", "mysql_install_db")
    mariabackup = _which("mariadb-backup", "mariabackup")
    mbstream = _which("mbstream")
    if not (mariadbd and install_db and mariabackup and mbstream):
        return None
    try:
        server_out = process.run([mariadbd, "--version"], timeout=60)
        tool_out = process.run([mariabackup, "--version"], timeout=60)
    except EngineError:
        return None
    server_text = server_out.stdout.decode("utf-8", "replace") + server_out.stderr
    if "mariadb" not in server_text.lower():
        return None  # a MySQL server: mariabackup cannot back it up
    server_version = metadata.parse_version(server_text)
    tool_version = metadata.parse_version(
        tool_out.stderr + tool_out.stdout.decode("utf-8", "replace")
    )
    if server_version is None or tool_version is None:
        return None
    if metadata.series(server_version) != metadata.series(tool_version):
        return None  # mariabackup must come from the server's own release series
    text = server_text.split("Ver", 1)[-1].split()[0] if "Ver" in server_text else ""
    return Tools(
        mariadbd=mariadbd,
        install_db=install_db,
        mariabackup=mariabackup,
        mbstream=mbstream,
        server_version=text or ".".join(map(str, server_version)),
        series=metadata.series(server_version),
    )


def _which(*names: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SEARCH_PATH])
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


def failure_reason(
    exc: process.ProcessError, tool: str | os.PathLike[str] | None = None, lines: int = 8
) -> str:
    """The tool's status and the stderr lines that say what went wrong (mariabackup logs
    every file it copies, so a plain tail is mostly noise). ``tool``: the name to give
    when the tool ran through ``runuser``."""
    head = str(exc).split(":", 1)[0]
    if tool is not None:
        head = head.replace(exc.tool, Path(tool).name, 1)
    tail = exc.stderr.strip().splitlines()
    errors = [line for line in tail if _ERROR_LINE.search(line)]
    chosen = (errors or tail)[-lines:]
    return head + (": " + "\n".join(chosen) if chosen else "")


def scrub(text: str, secret_values: Sequence[str]) -> str:
    for value in secret_values:
        if value:
            text = text.replace(value, "***")
    return text


def read_tool_file(directory: Path, name: str) -> str:
    """A small file a tool running as the instance's user wrote: never through a link."""
    with beneath.directory(directory) as dir_fd:
        fd, _ = beneath.open_regular(dir_fd, name)
        with os.fdopen(fd, "rb") as handle:
            return handle.read(MAX_TOOL_FILE).decode("utf-8", "replace")


@contextlib.contextmanager
def option_file(text: str, *, owner: tuple[int, int] | None = None) -> Iterator[int]:
    """An option file as a descriptor (see the module documentation): readable by
    ``owner`` (the tool's user; ``None``: the service's) alone, sealed against change.
    Passed to a tool with :func:`defaults_file` and ``pass_fds``."""
    fd = os.memfd_create("client.cnf", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        data = memoryview(text.encode("utf-8"))
        while data:
            data = data[os.write(fd, data) :]
        os.fchmod(fd, 0o400)
        if owner is not None:
            os.fchown(fd, *owner)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        yield fd
    finally:
        os.close(fd)


def defaults_file(fd: int) -> str:
    """The option naming an :func:`option_file` in the tool's own descriptor table."""
    return f"--defaults-file=/dev/fd/{fd}"
