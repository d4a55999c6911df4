"""Option files for the server and the tools, and SQL quoting.

Secrets never reach a command line: tools get them from an option file that only the
current user can read (mode 0600 in a 0700 directory), passed as ``--defaults-file`` so no
system option file (``/etc/mysql/…``) is read either, and removed when the tool is done.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from strongroom.engines.mariadb.models import Address

# Small enough for tests and many instances on one host; the operator can tune a managed
# instance by editing its ``my.cnf`` (it is read again on every start).
SERVER_DEFAULTS: dict[str, str] = {
    "innodb_buffer_pool_size": "64M",
    "innodb_log_file_size": "48M",
    "innodb_log_buffer_size": "8M",
    "max_connections": "100",
    "performance_schema": "OFF",
    "binlog_format": "ROW",
    "binlog_expire_logs_seconds": "604800",
    "character_set_server": "utf8mb4",
    "collation_server": "utf8mb4_general_ci",
}

MAX_IDENTIFIER = 64


def option_value(value: str | int | Path) -> str:
    """A value quoted for a MariaDB option file (double quotes, backslash escapes)."""
    text = str(value)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ValueError("option values must not contain control characters")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(groups: Mapping[str, Mapping[str, str | int | Path | None]]) -> str:
    """An option file: ``[group]`` then ``key = "value"`` (``None`` → bare flag)."""
    lines: list[str] = []
    for group, options in groups.items():
        lines.append(f"[{group}]")
        for key, value in options.items():
            lines.append(key if value is None else f"{key} = {option_value(value)}")
        lines.append("")
    return "\n".join(lines)


def write_private(path: Path, text: str, *, owner: tuple[int, int] | None = None) -> None:
    """Write ``text`` to a new file readable only by its owner."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


@contextlib.contextmanager
def private_dir(prefix: str = "strongroom-mariadb-") -> Iterator[Path]:
    """A 0700 scratch directory, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def client_options(connection: Mapping[str, object], user: str, password: str) -> dict[str, str]:
    """``[client]`` options reaching ``connection``: the socket for a managed server,
    TCP host and port for an external one."""
    where = Address.model_validate(dict(connection))
    options: dict[str, str] = {"user": user, "password": password}
    if where.socket_path:
        options["socket"] = where.socket_path
    else:
        options["host"] = where.host
        options["port"] = str(where.port)
        options["protocol"] = "TCP"
    return options


def quote_identifier(name: str) -> str:
    """A database name as a backquoted SQL identifier."""
    check_identifier(name, "database name")
    return "`" + name.replace("`", "``") + "`"


def check_identifier(name: str, what: str) -> None:
    if not name or len(name) > MAX_IDENTIFIER:
        raise ValueError(f"{what} must be 1 to {MAX_IDENTIFIER} characters")
    if any(ord(ch) < 32 or ch in "\x7f/\\." for ch in name) or name != name.strip():
        raise ValueError(f"{what} {name!r} has characters that are not allowed")


def sql_string(value: str) -> str:
    """A single-quoted SQL string literal (for init files, where no client escapes)."""
    if any(ord(ch) < 32 for ch in value):
        raise ValueError("SQL strings in init files must not contain control characters")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
