"""A PostgreSQL server this host runs: binaries, configuration, ``pg_ctl``, ports.

PostgreSQL refuses to run as root. When the service runs as root, each managed server
runs as an OS user of its own (:mod:`strongroom.engines.identity`, see :mod:`server`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from strongroom.engines import beneath, process
from strongroom.engines.identity import InstanceIdentity

SEARCH_ROOTS = (Path("/usr/lib/postgresql"), Path("/usr/pgsql"), Path("/usr/local/pgsql"))
REQUIRED_TOOLS = ("initdb", "pg_ctl", "postgres", "pg_basebackup")
# sun_path holds 107 bytes and a NUL; the server's socket is "<dir>/.s.PGSQL.<port>".
SUN_PATH_MAX = 107
UNIX_SOCKET_DIR_MAX = SUN_PATH_MAX - len("/.s.PGSQL.65535")
SHORT_SOCKET_ROOT = Path("/tmp")
# As root, short socket directories go in a directory of root's (0711) instead: in /tmp,
# a tenant's program could make another instance's directory first and keep it from starting.
PRIVATE_SOCKET_ROOT = Path("/run/strongroom-pg")
SLOT_WAL_KEEP_SIZE = "2GB"


def find_bin_dir(explicit: Path | None) -> Path | None:
    """The directory holding the server binaries: ``explicit``, else the newest
    ``/usr/lib/postgresql/<major>/bin``, else the directory of ``pg_ctl`` on ``PATH``."""
    if explicit is not None:
        return explicit if all((explicit / t).exists() for t in REQUIRED_TOOLS) else None
    candidates: list[tuple[int, Path]] = []
    for root in SEARCH_ROOTS:
        if not root.is_dir():
            continue
        for child in root.iterdir():
            bin_dir = child / "bin"
            if child.name.isdigit() and all((bin_dir / t).exists() for t in REQUIRED_TOOLS):
                candidates.append((int(child.name), bin_dir))
    if candidates:
        return max(candidates)[1]
    on_path = shutil.which("pg_ctl")
    if on_path:
        bin_dir = Path(on_path).resolve().parent
        if all((bin_dir / t).exists() for t in REQUIRED_TOOLS):
            return bin_dir
    return None


_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def server_version(bin_dir: Path) -> tuple[str, str]:
    """``(major, full)`` of the installed server, e.g. ``("15", "15.20")``."""
    out = process.run([bin_dir / "postgres", "--version"], timeout=30).stdout.decode()
    match = _VERSION_RE.search(out)
    if not match:
        raise process.ProcessError("postgres", f"printed an unexpected version: {out.strip()}")
    major = match.group(1)
    full = f"{major}.{match.group(2)}" if match.group(2) else major
    return major, full


def socket_dir_for(home: Path) -> Path:
    """Where a managed server's unix socket lives: ``home/run``, unless that path is too
    long for a socket address; then a short directory named after the home (same home,
    same directory, so a server restarted later finds it again), in
    :data:`PRIVATE_SOCKET_ROOT` as root, else under /tmp."""
    run = home / "run"
    if len(os.fsencode(run)) <= UNIX_SOCKET_DIR_MAX:
        return run
    digest = hashlib.sha256(os.fsencode(home.absolute())).hexdigest()[:24]
    if os.geteuid() == 0:
        return PRIVATE_SOCKET_ROOT / digest
    return SHORT_SOCKET_ROOT / f"strongroom-pg-{digest}"


def _ensure_private_root() -> None:
    """:data:`PRIVATE_SOCKET_ROOT`: made 0711 by root, or accepted if it is root's and
    no one else may make names in it."""
    with contextlib.suppress(FileExistsError):
        PRIVATE_SOCKET_ROOT.mkdir(mode=0o711)
    with beneath.directory(PRIVATE_SOCKET_ROOT) as fd:
        st = os.fstat(fd)
        if st.st_uid != 0 or st.st_mode & 0o022:
            raise PermissionError(
                f"{PRIVATE_SOCKET_ROOT} is not a directory of root's that only root may write"
            )
        os.fchmod(fd, 0o711)  # whatever the umask: each server's user passes through


def ensure_socket_dir(path: Path, user: InstanceIdentity) -> None:
    """Make the socket directory (mode 0700, the server's OS user's), or accept an
    existing one only if it is a real directory of that user that no one else can
    enter: a name under /tmp can be taken first by anyone, to catch the socket. The new
    directory is given away through a descriptor, so a link swapped in after ``mkdir``
    is never followed.

    Raises ``PermissionError`` when an existing path is not acceptable."""
    if path.parent == PRIVATE_SOCKET_ROOT:
        _ensure_private_root()
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != user.uid or st.st_mode & 0o077:
            raise PermissionError(
                f"socket directory {path} exists and is not a private directory of the "
                "server's OS user"
            ) from None
        return
    try:
        fd = beneath.open_dir(path)
    except OSError as exc:
        raise PermissionError(f"socket directory {path} changed while it was made") from exc
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise PermissionError(f"socket directory {path} changed while it was made")
        if user.owner is not None:
            os.fchown(fd, *user.owner)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def free_port(address: str, avoid: Iterable[int] = ()) -> int:
    """A TCP port nothing listens on at ``address`` right now."""
    avoid = set(avoid)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise OSError(f"no free TCP port on {address}")


def port_is_free(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def render_conf(settings: Mapping[str, str | int]) -> str:
    lines = ["# Written by Strongroom; edits are replaced when the instance is rebuilt."]
    for key, value in settings.items():
        lines.append(f"{key} = {value if isinstance(value, int) else _quote(value)}")
    return "\n".join(lines) + "\n"


def is_loopback(address: str) -> bool:
    return address in ("127.0.0.1", "::1", "localhost") or address.startswith("127.")


RESTORE_MAP = "strongroom-restore"


def render_hba(bind_address: str, *, peer_map: bool = False) -> str:
    """SCRAM passwords everywhere, on the local socket too: a tenant that runs programs as
    the server's OS user must not get in without one. ``peer_map``: while a restore
    resets the bootstrap superuser's password (unknown until then), the local socket
    also lets in the service's own OS user as that role (see :func:`render_ident`)."""
    nets = ["127.0.0.1/32", "::1/128"] if is_loopback(bind_address) else ["0.0.0.0/0", "::/0"]
    lines = [
        "# Written by Strongroom.",
        "# TYPE  DATABASE     USER  ADDRESS  METHOD",
    ]
    if peer_map:
        lines.append(f"local   all          all            peer map={RESTORE_MAP}")
    lines.append("local   all          all            scram-sha-256")
    lines.append("local   replication  all            scram-sha-256")
    for net in nets:
        lines.append(f"host    all          all   {net}  scram-sha-256")
        lines.append(f"host    replication  all   {net}  scram-sha-256")
    return "\n".join(lines) + "\n"


def render_ident(os_user: str | None = None, role: str | None = None) -> str:
    """The user name map: empty, or ``os_user`` (the service's) allowed in as ``role``."""
    lines = ["# Written by Strongroom."]
    if os_user is not None and role is not None:
        for name in (os_user, role):
            if not name or '"' in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
                raise ValueError(f"a name the user name map cannot hold: {name!r}")
        lines.append(f'{RESTORE_MAP}  "{os_user}"  "{role}"')
    return "\n".join(lines) + "\n"
