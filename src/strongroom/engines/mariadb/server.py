"""Running a managed ``mariadbd``: layout of its home, option file, start, wait, stop.

Layout of a managed instance's ``home``::

    home/my.cnf           the server's option file (no secrets)
    home/data/            the data directory (binary logs included)
    home/mysqld.sock      the socket; home/mariadbd.pid, home/mariadbd.err
    home/tmp/             the server's tmpdir
    home/files/           the only directory SQL may read or write files in (secure_file_priv)
    home/private/         one-shot files with secrets for the server (init files)
    home/restore/         scratch space of a restore, removed when it ends

The server is a long-running daemon, so it is started with :class:`subprocess.Popen`
(argv list, no shell, own session, the minimal environment of :mod:`..process`) rather than
through :mod:`..process`'s runners, which wait for their tool to finish. When Strongroom
runs as root, each instance has an OS user of its own (:mod:`..identity`): ``mariadbd`` is
started with ``--user=<it>`` (it drops root itself before touching any file), ``home`` and
its directories are 0700 and that user's, and every directory above ``home`` must let that
user through.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql

from strongroom.engines import beneath, process
from strongroom.engines.errors import InstanceError
from strongroom.engines.identity import IdentityError, InstanceIdentity, give_tree
from strongroom.engines.mariadb import config, sessions

SOCKET_NAME = "mysqld.sock"
PID_NAME = "mariadbd.pid"
LOG_NAME = "mariadbd.err"
CONFIG_NAME = "my.cnf"
DATA_NAME = "data"
TMP_NAME = "tmp"
FILES_NAME = "files"
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the terminating NUL
STOP_TIMEOUT = 120.0
POLL_INTERVAL = 0.1
LOG_TAIL_LINES = 15
MAX_LOG_READ = 64 * 1024  # of the server's log, read for an error's detail
MAX_OPTION_FILE = 1 << 20
# A probe of a server that may still be starting: its handshake ends within this (the
# socket may hold a stand-in that never finishes it), then it is tried again until the
# start's own timeout.
PROBE_DEADLINE = 5.0

# Popen objects of servers this process started, so their exit status is collected.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


@dataclass(frozen=True)
class Layout:
    home: Path

    @property
    def config(self) -> Path:
        return self.home / CONFIG_NAME

    @property
    def datadir(self) -> Path:
        return self.home / DATA_NAME

    @property
    def socket(self) -> Path:
        return self.home / SOCKET_NAME

    @property
    def pid_file(self) -> Path:
        return self.home / PID_NAME

    @property
    def log(self) -> Path:
        return self.home / LOG_NAME

    @property
    def tmpdir(self) -> Path:
        return self.home / TMP_NAME

    @property
    def files_dir(self) -> Path:
        """``secure_file_priv``: ``LOAD_FILE``, ``LOAD DATA`` and ``INTO OUTFILE`` work
        here only, so a tenant with the FILE privilege reads nothing of the host."""
        return self.home / FILES_NAME

    @property
    def restore_dir(self) -> Path:
        return self.home / "restore"

    @property
    def private_dir(self) -> Path:
        """Where one-shot files with secrets for the server (init files) live briefly."""
        return self.home / "private"


def free_port(bind_address: str) -> int:
    family = socket.AF_INET6 if ":" in bind_address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((bind_address, 0))
        return int(sock.getsockname()[1])


def port_is_free(bind_address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in bind_address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As mariadbd does: connections in TIME_WAIT do not keep the port from it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind_address, port))
        except OSError:
            return False
    return True


def write_config(
    layout: Layout,
    *,
    port: int,
    bind_address: str,
    identity: InstanceIdentity,
    extra: dict[str, str] | None = None,
) -> None:
    server: dict[str, str | int | Path | None] = {
        "datadir": layout.datadir,
        "socket": layout.socket,
        "port": port,
        "bind-address": bind_address,
        "pid-file": layout.pid_file,
        "log-error": layout.log,
        "tmpdir": layout.tmpdir,
        "secure_file_priv": layout.files_dir,
        "log-bin": "mariadb-bin",
        "server-id": 1,
        "skip-name-resolve": None,
        **config.SERVER_DEFAULTS,
        **(extra or {}),
    }
    if identity.name is not None:
        # The server is started as this user (see start); named here too, so that a
        # server started by hand as root drops to it rather than refusing to run.
        server["user"] = identity.name
    text = "# Managed by Strongroom; read on every start.\n" + config.render(
        {"mariadbd": server, "client": {"socket": layout.socket, "port": port}}
    )
    _replace_config(layout, text)


def _replace_config(layout: Layout, text: str) -> None:
    # Written by the service and only readable through the instance's 0700 home.
    # O_EXCL: never through a link someone left under the temporary name.
    tmp = layout.config.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(fd, 0o644)
        handle.write(text)
    os.replace(tmp, layout.config)


def set_port(layout: Layout, port: int) -> None:
    """Point the option file at another port, keeping every other option as it is."""
    text = read_option_file(layout)
    text = re.sub(r'(?m)^port = "\d+"$', f'port = "{port}"', text)
    _replace_config(layout, text)


def set_server_options(layout: Layout, options: dict[str, str]) -> None:
    """Set ``[mariadbd]`` options in the option file, keeping every other line (the
    operator may have tuned it): an option already there is replaced where it stands, a
    new one added after the last ``[mariadbd]`` line."""
    wanted = {_option_key(name): name for name in options}
    lines = read_option_file(layout).splitlines()
    replaced: set[str] = set()
    group = ""
    insert_at: int | None = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            group = stripped.strip("[]")
            continue
        if group != "mariadbd":
            continue
        insert_at = index + 1
        name = wanted.get(_option_key(stripped.partition("=")[0]))
        if name is not None:
            lines[index] = f"{name} = {config.option_value(options[name])}"
            replaced.add(name)
    added = [f"{k} = {config.option_value(v)}" for k, v in options.items() if k not in replaced]
    if insert_at is None:
        lines += ["[mariadbd]", *added]
    else:
        lines[insert_at:insert_at] = added
    _replace_config(layout, "\n".join(lines) + "\n")


def _option_key(text: str) -> str:
    # mariadbd treats "-" and "_" in option names alike.
    return text.strip().replace("-", "_")


def read_config(layout: Layout) -> dict[str, str]:
    """The ``[mariadbd]`` options of a managed server's option file."""
    options: dict[str, str] = {}
    group = ""
    for line in read_option_file(layout).splitlines():
        line = line.strip()
        if line.startswith("["):
            group = line.strip("[]")
            continue
        if group != "mariadbd" or not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        options[key.strip()] = value
    return options


def prepare_home(layout: Layout, identity: InstanceIdentity) -> None:
    """Create ``home`` and its directories: 0700, the instance's OS user's."""
    if len(str(layout.socket)) > MAX_SOCKET_PATH:
        raise InstanceError(
            f"the instance directory path is too long for a server socket "
            f"(at most {MAX_SOCKET_PATH - len(SOCKET_NAME) - 1} characters)"
        )
    layout.home.parent.mkdir(parents=True, exist_ok=True)
    for directory in (layout.home, layout.tmpdir, layout.private_dir, layout.files_dir):
        identity.private_dir(directory)
    if identity.name is not None:
        check_reachable(layout.home, identity)


def hand_over(layout: Layout, identity: InstanceIdentity) -> None:
    """Give an existing instance's files to ``identity`` (an instance made before it had
    an OS user of its own, or whose user was lost) and point its option file at it."""
    chown_tree(layout.home, identity)
    _reclaim_option_file(layout)
    prepare_home(layout, identity)
    if layout.datadir.is_dir():
        close_datadir(layout)
    options = {"secure_file_priv": str(layout.files_dir)}
    if identity.name is not None:
        options["user"] = identity.name
    set_server_options(layout, options)


def close_datadir(layout: Layout) -> None:
    """Make the data directory 0700 (the tools made it), on the directory itself: a link
    left in its place is refused, not followed."""
    with beneath.directory(layout.datadir) as fd:
        os.fchmod(fd, 0o700)


def check_reachable(path: Path, identity: InstanceIdentity) -> None:
    """Every directory above ``path`` must let ``identity`` search it."""
    name = identity.name
    groups = set(os.getgrouplist(name, identity.gid)) if name else {identity.gid}
    for parent in path.resolve().parents:
        st = parent.stat()
        if st.st_uid == identity.uid:
            allowed = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in groups:
            allowed = bool(st.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(st.st_mode & stat.S_IXOTH)
        if not allowed:
            raise InstanceError(
                f"the MariaDB server runs as {name!r}, which cannot reach the "
                "instance directory: a parent directory does not let it through "
                "(give it search permission, e.g. mode 0711)"
            )


def chown_tree(path: Path, identity: InstanceIdentity) -> None:
    """Give ``path`` and everything below it to ``identity``, by descriptor: a daemon of
    the old owner that swaps a directory for a link meanwhile never leads it outside
    (links are given as links, never what they point to). The option file stays the
    service's: the server reads it, only the service writes it."""
    if identity.owner is None:
        return
    uid, gid = identity.owner
    try:
        give_tree(path, uid, gid, keep=(CONFIG_NAME,))
    except IdentityError as exc:
        raise InstanceError(str(exc)) from exc


def _open_in_home(layout: Layout, name: str) -> tuple[int, os.stat_result, int]:
    """``(descriptor, its status, the home's owner)`` of the regular file ``name`` in the
    home, opened beneath it and never through a link (``beneath.EscapeError`` otherwise).

    The home is the instance's OS user's: a tenant running code as that user may put a
    link, a FIFO or a hard link to another file in any name there, so the callers also
    refuse a file with another name (``st_nlink``) and read a bounded amount."""
    with beneath.directory(layout.home) as dir_fd:
        home_owner = os.fstat(dir_fd).st_uid
        fd, st = beneath.open_regular(dir_fd, name)
    return fd, st, home_owner


def read_in_home(layout: Layout, name: str, *, limit: int, start: int = 0) -> bytes:
    """Up to ``limit`` bytes of the file ``name`` in the home from ``start`` (the last
    ``limit`` bytes when it holds more), as :func:`_open_in_home` opens it. Raises OSError
    (``beneath.EscapeError`` when refused)."""
    fd, st, _ = _open_in_home(layout, name)
    with os.fdopen(fd, "rb") as handle:
        if st.st_nlink != 1:
            raise beneath.EscapeError(errno.EMLINK, f"{name} has another name (a hard link)")
        handle.seek(max(start, st.st_size - limit))
        return handle.read(limit)


def read_option_file(layout: Layout) -> str:
    """The option file, opened as :func:`_open_in_home` opens it, and only if it is the
    service's or the instance user's (an older release gave it to that user). What the
    tenant may have written there gains it nothing: the server runs as its user whatever
    the file says, and the service takes only the port from it."""
    try:
        fd, st, home_owner = _open_in_home(layout, CONFIG_NAME)
    except OSError as exc:
        raise InstanceError(f"the instance's option file cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if st.st_nlink != 1 or st.st_uid not in (os.geteuid(), home_owner):
            raise InstanceError("the instance's option file is not the service's; it is not read")
        return handle.read(MAX_OPTION_FILE).decode("utf-8", "replace")


def configured_port(layout: Layout) -> int:
    port = read_config(layout).get("port", "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InstanceError("the instance's option file names no valid port")
    return int(port)


def _reclaim_option_file(layout: Layout) -> None:
    """Give the option file back to the service (an older release gave the whole home,
    option file included, to the server's user)."""
    fd, st, _ = _open_in_home(layout, CONFIG_NAME)
    try:
        if st.st_nlink != 1:
            raise InstanceError("the instance's option file has another name; it is not read")
        os.fchown(fd, os.geteuid(), os.getegid())
    finally:
        os.close(fd)


def log_tail(layout: Layout, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = read_in_home(layout, LOG_NAME, limit=MAX_LOG_READ).decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(line.rstrip() for line in deque(text.splitlines(), maxlen=lines))


def _log_size(layout: Layout) -> int:
    try:
        return layout.log.lstat().st_size
    except OSError:
        return 0


def _log_since(layout: Layout, offset: int) -> str:
    try:
        raw = read_in_home(layout, LOG_NAME, limit=MAX_LOG_READ, start=offset)
    except OSError:
        return ""
    return "\n".join(raw.decode("utf-8", "replace").strip().splitlines()[-LOG_TAIL_LINES:])


def read_pid(layout: Layout) -> int | None:
    try:
        return int(read_in_home(layout, PID_NAME, limit=32).strip())
    except (OSError, ValueError):
        return None


def _is_our_server(pid: int, layout: Layout) -> bool:
    """``pid`` is a live (not zombie) mariadbd started with this home's option file."""
    _reap(pid)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):
        return False
    wanted = f"--defaults-file={layout.config}".encode()
    return wanted in cmdline


def _reap(pid: int) -> None:
    with _children_lock:
        proc = _children.get(pid)
        if proc is not None and proc.poll() is not None:
            del _children[pid]


def running_pid(layout: Layout) -> int | None:
    pid = read_pid(layout)
    if pid is not None and _is_our_server(pid, layout):
        return pid
    with _children_lock:
        candidates = list(_children.items())
    for child_pid, proc in candidates:
        if proc.poll() is None and _is_our_server(child_pid, layout):
            return child_pid
    return None


def connect(
    layout: Layout, user: str, password: str, *, handshake_deadline: float | None = None
) -> sessions.BoundedConnection:
    """A session on the server through the home's socket, bounded as every session of the
    service is (:class:`.sessions.BoundedConnection`): the home is the instance's OS
    user's, and so may be whatever listens on that socket."""
    return sessions.connect(
        user,
        password,
        unix_socket=str(layout.socket),
        read_timeout=600,
        handshake_deadline=handshake_deadline,
    )


@contextlib.contextmanager
def session(layout: Layout, user: str, password: str) -> Iterator[pymysql.cursors.Cursor]:
    conn = connect(layout, user, password)
    try:
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()


def start(
    layout: Layout,
    *,
    identity: InstanceIdentity,
    mariadbd: str,
    user: str,
    password: str,
    timeout: float,
    init_file: Path | None = None,
    error: Callable[[str], Exception] = InstanceError,
) -> int:
    """Start the server in the background, as ``identity``, and wait until ``user`` can
    log in.

    Returns its pid. On failure the server is stopped and ``error`` raised with the
    server log's tail."""
    argv = [mariadbd, f"--defaults-file={layout.config}"]
    # As its own OS user from exec on, not root told to switch: the option file lies in a
    # home its user owns, so a tenant that runs code as that user could rewrite it (user =
    # root, plugin-load-add) for the next start.
    switch: dict[str, Any] = {}
    if identity.owner is not None:
        switch = {"user": identity.uid, "group": identity.gid, "extra_groups": []}
    if init_file is not None:
        argv.append(f"--init-file={init_file}")
    log_offset = _log_size(layout)
    with open(os.devnull, "rb") as devnull:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=devnull,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=layout.home,
                start_new_session=True,
                close_fds=True,
                # Nothing of the service's environment: a tenant that is superuser here
                # can read the server's (/proc/PID/environ as the same OS user).
                env=process.minimal_env(),
                **switch,
            )
        except OSError as exc:
            raise error(f"mariadbd could not be started: {exc.strerror}") from None
    with _children_lock:
        _children[proc.pid] = proc
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        if proc.poll() is not None:
            _reap(proc.pid)
            detail = _log_since(layout, log_offset)
            raise error(
                f"mariadbd exited with status {proc.returncode} while starting"
                + (f": {detail}" if detail else "")
            )
        if layout.socket.exists():
            try:
                connect(layout, user, password, handshake_deadline=PROBE_DEADLINE).close()
                return proc.pid
            except pymysql.err.OperationalError as exc:
                code = exc.args[0] if exc.args else 0
                last_error = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
                if code == 1045:  # access denied: the accounts are not what we expect
                    _terminate(proc.pid, layout)
                    raise error(
                        "mariadbd started, but the service account cannot log in: "
                        f"{last_error}; {_log_since(layout, log_offset)}"
                    ) from None
        if time.monotonic() > deadline:
            _terminate(proc.pid, layout)
            raise error(
                f"mariadbd did not accept connections within {timeout:.0f} s"
                + (f" ({last_error})" if last_error else "")
                + f": {_log_since(layout, log_offset)}"
            )
        time.sleep(POLL_INTERVAL)


def stop(layout: Layout, *, timeout: float = STOP_TIMEOUT) -> bool:
    """Shut the server down cleanly (SIGTERM), SIGKILL after ``timeout``. Returns whether
    a server was running."""
    pid = running_pid(layout)
    if pid is None:
        return False
    _terminate(pid, layout, timeout=timeout)
    return True


def _terminate(pid: int, layout: Layout, *, timeout: float = STOP_TIMEOUT) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 30.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                _reap(pid)
                return
            time.sleep(POLL_INTERVAL)
    _reap(pid)


def _alive(pid: int) -> bool:
    with _children_lock:
        proc = _children.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill(layout: Layout) -> None:
    """Stop at once (after a failed restore): nothing must be left running."""
    pid = running_pid(layout)
    if pid is not None:
        _terminate(pid, layout, timeout=10.0)


def wait_ready(layout: Layout, user: str, password: str, *, timeout: float) -> None:
    """Wait until a running server accepts ``user`` (it may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connect(layout, user, password, handshake_deadline=PROBE_DEADLINE).close()
            return
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == 1045:
                raise InstanceError("the service account cannot log in to the server") from None
            if running_pid(layout) is None:
                raise InstanceError(
                    f"mariadbd stopped while starting: {log_tail(layout)}"
                ) from None
            if time.monotonic() > deadline:
                raise InstanceError(
                    f"mariadbd did not accept connections within {timeout:.0f} s"
                ) from None
        time.sleep(POLL_INTERVAL)
