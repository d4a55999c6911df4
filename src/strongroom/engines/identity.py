"""One OS identity per managed instance.

When the service runs as root, each managed database server runs as a system user of its
own, created with the instance and removed with it. A tenant that becomes superuser of its
server (``COPY … FROM PROGRAM``, ``LOAD_FILE``, ``SELECT … INTO OUTFILE``) acts as that user,
which owns only its instance's home (0700): other instances, the service's key and metadata
stay out of reach. When the service is not root, everything runs as the service's own user
and no such separation exists (docs/security.md says so).

Such a tenant can also leave files of that user elsewhere on the host (a setuid copy of a
shell in /tmp). So a removed instance's uid is not handed out again: each user gets a number
drawn at random from a range of its own (and the group the same number), and what it left in
the host's world-writable temporary directories is removed with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import grp
import hashlib
import os
import pwd
import re
import secrets
import select
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

PREFIX = "sr-"
_NAME = re.compile(r"sr-[0-9a-f]{12}")
_LOCK_RETRIES = 20

# Instance users' uids (= their groups' gids): [2^30, 2^30 + 2^28). Above the system and
# login ranges, nobody and systemd's dynamic users (< 65536) and the default subordinate
# ranges of rootless containers (100000-600100000); below systemd's transient ranges
# (0x70000000) and 2^31 (ids kept in a signed int). Drawn at random from 2^28 numbers, a
# freed one is as good as never drawn again. Nothing here writes these ids into a tar header
# (7 octal digits in ustar): managed PostgreSQL backups are files of our own format,
# mariabackup's xbstream carries no owner, and pg_basebackup (registered servers) writes
# larger ids in GNU base-256, which tarfile reads; tarstream gives files its own owner.
ID_FIRST = 1 << 30
ID_COUNT = 1 << 28
_ID_PICKS = 20
_MIN_WINDOW = 1 << 16  # fewer ids than this to draw from, and a freed one comes back soon
# World-writable directories a tenant's program may have left files of its user in.
TEMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_SUBORDINATE = ("/etc/subuid", "/etc/subgid")
_MAX_DEPTH = 128
_MAX_PASSES = 1000  # of remove_tree: a tree up to 128,000 levels deep
_KILL_ROUNDS = 50
_KILL_BATCH = 256
_KILL_WAIT = 5.0  # seconds for one killed process to be gone
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class IdentityError(Exception):
    """An instance's OS user could not be created or removed."""


def name_for(home: Path) -> str:
    """The OS user name of the instance living in ``home`` (stable for that path)."""
    digest = hashlib.sha256(os.fsencode(Path(home).absolute())).hexdigest()
    return PREFIX + digest[:12]


@dataclass(frozen=True)
class InstanceIdentity:
    """Who an instance's processes run as; ``name`` is ``None`` for the service's own user."""

    name: str | None
    uid: int
    gid: int

    @classmethod
    def current(cls) -> InstanceIdentity:
        return cls(None, os.geteuid(), os.getegid())

    @classmethod
    def for_home(cls, home: Path) -> InstanceIdentity:
        """The identity of the instance in ``home``, created if it does not exist yet.
        Not root: the service's own user."""
        if os.geteuid() != 0:
            return cls.current()
        name = name_for(home)
        found = cls.lookup(name)
        if found is not None:
            return found
        _useradd(name)
        made = cls.lookup(name)
        if made is None:
            raise IdentityError(f"the OS user {name} was not created")
        return made

    @classmethod
    def lookup(cls, name: str | None) -> InstanceIdentity | None:
        if name is None:
            return cls.current()
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        return cls(name, entry.pw_uid, entry.pw_gid)

    @property
    def owner(self) -> tuple[int, int] | None:
        """``(uid, gid)`` to give files to, or ``None`` when no change is needed."""
        return (self.uid, self.gid) if self.name is not None else None

    def argv(self, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        """``argv`` run as this identity (``runuser``, an argv prefix, no shell)."""
        prefix = ["runuser", "-u", self.name, "--"] if self.name is not None else []
        return prefix + [str(a) for a in argv]

    def chown(self, path: Path) -> None:
        if self.owner is not None:
            os.chown(path, *self.owner, follow_symlinks=False)

    def private_dir(self, path: Path) -> None:
        """Make ``path`` (a new directory) 0700 and this identity's."""
        path.mkdir(mode=0o700, parents=False, exist_ok=True)
        st = path.lstat()
        if not os.path.isdir(path) or os.path.islink(path):
            raise IdentityError(f"{path} is not a directory")
        if self.owner is not None and (st.st_uid, st.st_gid) != self.owner:
            self.chown(path)
        os.chmod(path, 0o700)

    def remove(self) -> None:
        """Delete the OS user (and its group), the processes it still runs, and what it
        left in :data:`TEMP_DIRS`. Only the service's own ``sr-`` users; their servers are
        stopped already."""
        name = self.name
        if name is None or not _NAME.fullmatch(name):
            return
        found = self.lookup(name)
        if found is None:
            return
        if found.uid not in (0, os.geteuid()):
            found.kill_processes()
            for top in TEMP_DIRS:
                _remove_leftovers(top, found.uid)
        _retry_locked(["userdel", name], ok_if=lambda: self.lookup(name) is None)
        if _gid_of(name) is not None:  # userdel leaves it when USERGROUPS_ENAB is off
            _retry_locked(["groupdel", name], ok_if=lambda: _gid_of(name) is None)

    def kill_processes(self) -> None:
        """SIGKILL every process this user runs, if it is one of the service's ``sr-``
        users. A tenant may have started programs of its own (``COPY … FROM PROGRAM`` and
        setsid): they would outlive the instance, change its files while they are removed,
        and keep userdel from removing a user in use."""
        name = self.name
        if name is None or not _NAME.fullmatch(name):
            return
        found = self.lookup(name)
        if found is not None and found.uid not in (0, os.geteuid()):
            _kill_processes_of(found.uid)


def remove_tree(path: Path) -> None:
    """Remove ``path`` and, for a directory, all it holds, as :func:`_remove_leftovers` does:
    no link is followed and no FIFO or device opened, whatever is swapped in meanwhile
    (``shutil.rmtree`` opens entries without ``O_NOFOLLOW``). Its parent is trusted.
    A directory ``_MAX_DEPTH`` levels down is moved up into ``path`` and removed in the next
    pass, so any depth goes with a bounded number of descriptors open. Raises ``OSError``
    when it is still there after ``_MAX_PASSES``."""
    path = Path(path)
    parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for _ in range(_MAX_PASSES):
            try:
                st = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                return
            top = None
            if stat.S_ISDIR(st.st_mode):
                with contextlib.suppress(OSError):
                    top = os.open(path.name, _OPEN_DIR, dir_fd=parent)
            try:
                if top is not None and not os.path.samestat(st, os.fstat(top)):
                    raise OSError(errno.EBUSY, "replaced while being removed", str(path))
                _remove_entry(parent, path.name, st.st_dev, 0, None, top)
            finally:
                if top is not None:
                    os.close(top)
        raise OSError(errno.ENOTEMPTY, "could not be removed entirely", str(path))
    finally:
        os.close(parent)


def give_tree(path: Path, uid: int, gid: int, *, keep: Sequence[str] = ()) -> None:
    """Give the directory ``path`` and what it holds to ``uid``:``gid``, by descriptor: each
    directory is opened beneath its parent without following a link, so a directory that
    a daemon of the old owner swaps for a link meanwhile never leads the walk outside; links
    are given as links. ``keep`` names entries of ``path`` itself left as they are. What is
    theirs already is left alone (a chown to the same owner still dirties the inode).
    Raises ``IdentityError`` for a file with other hard links: it may be another instance's
    (when every server ran as one user), which this one would then own."""
    top = os.open(path, _OPEN_DIR)
    try:
        st = os.fstat(top)
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(top, uid, gid)
        _give_entries(top, str(path), st.st_dev, 0, uid, gid, frozenset(keep))
    finally:
        os.close(top)


def _give_entries(
    fd: int, where: str, dev: int, depth: int, uid: int, gid: int, keep: frozenset[str]
) -> None:
    with os.scandir(fd) as entries:
        names = [e.name for e in entries if e.name not in keep]
    for name in names:
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            if st.st_dev != dev or depth >= _MAX_DEPTH:
                continue  # another file system's, or deeper than any server looks
            try:
                inner = os.open(name, _OPEN_DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    continue  # replaced meanwhile
                raise
            try:
                now = os.fstat(inner)
                if not os.path.samestat(st, now):
                    continue  # replaced meanwhile
                if (now.st_uid, now.st_gid) != (uid, gid):
                    os.fchown(inner, uid, gid)
                _give_entries(inner, f"{where}/{name}", dev, depth + 1, uid, gid, frozenset())
            finally:
                os.close(inner)
            continue
        _give_entry(fd, name, f"{where}/{name}", uid, gid)


def _give_entry(fd: int, name: str, where: str, uid: int, gid: int) -> None:
    """A file or link, held (``O_PATH``: a FIFO or device is not opened) and checked before
    it is given through that very descriptor, so one swapped in after a look at it (a link
    exchanged for a hard link to another's file) is the one checked."""
    try:
        held = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    except FileNotFoundError:
        return
    try:
        st = os.fstat(held)
        if stat.S_ISDIR(st.st_mode):
            return  # swapped meanwhile: given in another pass, or not at all
        if st.st_nlink > 1:
            if stat.S_ISLNK(st.st_mode):
                return  # a link's owner opens nothing: leave one with other names alone
            raise IdentityError(
                f"{where} has other hard links; it is not given to the instance's OS user"
            )
        if (st.st_uid, st.st_gid) != (uid, gid):
            _fchown_held(held, uid, gid)
    finally:
        os.close(held)


_libc = ctypes.CDLL(None, use_errno=True)
_AT_EMPTY_PATH = 0x1000
_AT_SYMLINK_NOFOLLOW = 0x100


def _fchown_held(fd: int, uid: int, gid: int) -> None:
    """``fchownat(fd, "", …, AT_EMPTY_PATH)``: the entry an ``O_PATH`` descriptor holds, a
    link itself included (Python's ``os.chown`` has no way to say this)."""
    flags = _AT_EMPTY_PATH | _AT_SYMLINK_NOFOLLOW
    if _libc.fchownat(fd, b"", uid, gid, flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _kill_processes_of(uid: int) -> None:
    """SIGKILL every process whose real, effective or saved uid is ``uid``, until none is
    left (a process may fork meanwhile), each by a pidfd taken before its uid is checked,
    so a pid reused meanwhile is never signalled; at most ``_KILL_BATCH`` at a time."""
    for _ in range(_KILL_ROUNDS):
        handles: list[int] = []
        try:
            for pid in _pids():
                if len(handles) >= _KILL_BATCH:
                    break
                fd = _pidfd_if_owned(pid, uid)
                if fd is not None:
                    handles.append(fd)
            if not handles:
                return
            for fd in handles:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            waiting = select.poll()  # poll, not select: descriptors may be above 1024
            for fd in handles:
                waiting.register(fd, select.POLLIN)
            deadline = time.monotonic() + _KILL_WAIT
            left = len(handles)
            while left and time.monotonic() < deadline:
                for fd, _event in waiting.poll(100):  # readable: the process is gone
                    waiting.unregister(fd)
                    left -= 1
        finally:
            for fd in handles:
                os.close(fd)
    raise IdentityError(f"processes of uid {uid} kept appearing")


def _pids() -> list[int]:
    me = os.getpid()
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and int(entry) != me]


def _pidfd_if_owned(pid: int, uid: int) -> int | None:
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            fields = dict(line.partition(":")[::2] for line in status)
        threads = int(fields.get("Threads", "1").strip() or 1)
    except (OSError, ValueError):
        fields, threads = {}, 1
    # A zombie runs nothing, unless it is a leader whose other threads still run. The
    # filesystem uid (the fourth) is not looked at: a thread of the service's may be
    # acting as a file's owner (engines.fsids).
    exited = fields.get("State", "Z").split()[:1] in (["Z"], ["X"]) and threads <= 1
    if not exited and str(uid) in fields.get("Uid", "").split()[:3]:
        return fd
    os.close(fd)
    return None


def _pick_id() -> int:
    window = _id_window()
    assert window is not None  # _useradd checked
    first, count = window
    return first + secrets.randbelow(count)


def _mapped(path: str) -> list[tuple[int, int]]:
    """The ids this process's user namespace maps, as ``[first, end)`` spans."""
    try:
        with open(path, encoding="ascii") as fh:
            rows = [line.split() for line in fh]
    except OSError:
        return [(0, 1 << 32)]
    return [(int(r[0]), int(r[0]) + int(r[2])) for r in rows if len(r) == 3 and r[2].isdigit()]


def _id_window() -> tuple[int, int] | None:
    """``(first, count)`` of the ids to draw from: the range of our own, or, in a user
    namespace that does not map it (a container), the widest part of its map between 65536
    and 2^31; None when that leaves too few to draw from (then ``useradd`` chooses)."""
    spans = [
        (max(u[0], g[0]), min(u[1], g[1]))
        for u in _mapped("/proc/self/uid_map")
        for g in _mapped("/proc/self/gid_map")
    ]
    if any(lo <= ID_FIRST and hi >= ID_FIRST + ID_COUNT for lo, hi in spans):
        return ID_FIRST, ID_COUNT
    usable = [(max(lo, 1 << 16), min(hi, 1 << 31)) for lo, hi in spans]
    first, end = max(usable, key=lambda span: span[1] - span[0], default=(0, 0))
    return (first, end - first) if end - first >= _MIN_WINDOW else None


def _gid_of(group: str) -> int | None:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def _subordinate(n: int) -> bool:
    """Whether ``n`` is in a range handed to some user's containers."""
    for path in _SUBORDINATE:
        with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                _owner, _, rest = line.partition(":")
                start, _, count = rest.strip().partition(":")
                if start.isdigit() and count.isdigit() and 0 <= n - int(start) < int(count):
                    return True
    return False


def _uid_free(n: int) -> bool:
    return _free(n, pwd.getpwuid)


def _gid_free(n: int) -> bool:
    return _free(n, grp.getgrgid)


def _free(n: int, lookup: Callable[[int], object]) -> bool:
    """Whether no account of ``lookup``'s kind has ``n``, nor any subordinate range."""
    try:
        lookup(n)
    except KeyError:
        return not _subordinate(n)
    return False


def _useradd(name: str) -> None:
    """Create ``name`` with a group of its own, both numbered by :func:`_pick_id`."""
    if not _NAME.fullmatch(name):
        raise IdentityError(f"refusing to create OS user {name!r}")
    window = _id_window()
    if window is None:
        _useradd_system(name)
        return
    first, count = window
    for _ in range(_ID_PICKS):
        if InstanceIdentity.lookup(name) is not None:
            return  # a concurrent call made it
        gid = _gid_of(name)  # left by an interrupted call, or a concurrent one's
        if gid is not None and not (first <= gid < first + count and _uid_free(gid)):
            if InstanceIdentity.lookup(name) is not None:
                return  # a concurrent call has just made its user on that group
            _retry_locked(["groupdel", name], ok_if=lambda: _gid_of(name) is None)
            continue
        if gid is None:
            n = _pick_id()
            if not (_uid_free(n) and _gid_free(n)):
                continue
            try:
                _retry_locked(
                    ["groupadd", "--system", "--gid", str(n), name],
                    ok_if=lambda: _gid_of(name) is not None,
                )
            except IdentityError:
                if _gid_free(n):
                    raise
                continue  # taken meanwhile
            gid = _gid_of(name)
            if gid is None:
                continue
        try:
            _retry_locked(
                [
                    "useradd",
                    "--system",
                    "--uid",
                    str(gid),
                    "--gid",
                    str(gid),
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    # no lastlog/faillog records: at these uids lastlog would grow to
                    # hundreds of GB (sparse), and nobody logs in as these users
                    "--no-log-init",
                    "--comment",
                    "Strongroom managed instance",
                    name,
                ],
                ok_if=lambda: InstanceIdentity.lookup(name) is not None,
            )
        except IdentityError:
            if _uid_free(gid):
                with contextlib.suppress(IdentityError):  # no group left without its user
                    _retry_locked(["groupdel", name], ok_if=lambda: _gid_of(name) is None)
                raise
            continue  # taken meanwhile: its group goes at the top of the next round
        return
    raise IdentityError(f"no free uid found for {name}")


def _useradd_system(name: str) -> None:
    """``useradd``'s own choice of a system uid (a namespace mapping too few ids for a range
    of our own): a freed uid may then be handed out again."""
    _retry_locked(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            "--comment",
            "Strongroom managed instance",
            name,
        ],
        ok_if=lambda: InstanceIdentity.lookup(name) is not None,
    )


def _remove_leftovers(top: str, uid: int) -> None:
    """Remove the entries of the directory ``top`` owned by ``uid``: files, links (never
    their targets) and directories with all they hold. No link is followed and no directory
    of someone else is entered; what vanishes meanwhile or cannot be removed is skipped."""
    try:
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        dev = os.fstat(fd).st_dev
        with os.scandir(fd) as entries:
            names = [e.name for e in entries if _owned_by(e, uid)]
        for name in names:
            _remove_entry(fd, name, dev, 0, uid)
    except OSError:
        pass
    finally:
        os.close(fd)


def _owned_by(entry: os.DirEntry[str], uid: int) -> bool:
    try:
        return entry.stat(follow_symlinks=False).st_uid == uid
    except OSError:
        return False


def _remove_entry(
    parent: int, name: str, dev: int, depth: int, uid: int | None, top: int | None = None
) -> None:
    """``name`` in ``parent`` (if owned by ``uid``; anything when ``None``) and, for a
    directory on the same file system, what it holds, to ``_MAX_DEPTH`` levels; a directory
    there is moved into ``top`` (when given) for a later pass."""
    with contextlib.suppress(OSError):
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if uid is not None and st.st_uid != uid:
            return
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=parent)
            return
        if st.st_dev != dev:
            return
        if depth >= _MAX_DEPTH:
            if top is not None:  # renameat moves the entry itself, a link as a link
                os.rename(name, f".deep-{secrets.token_hex(8)}", src_dir_fd=parent, dst_dir_fd=top)
            return
        fd = os.open(name, _OPEN_DIR, dir_fd=parent)
        try:
            if not os.path.samestat(st, os.fstat(fd)):
                return  # replaced meanwhile
            with os.scandir(fd) as entries:
                names = [e.name for e in entries]
            for inner in names:
                _remove_entry(fd, inner, dev, depth + 1, None, top)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=parent)


def _retry_locked(argv: list[str], ok_if: object = None) -> None:
    """Run a shadow-utils tool; another one holding /etc/passwd's lock is retried."""
    last = ""
    for attempt in range(_LOCK_RETRIES):
        result = subprocess.run(
            argv, capture_output=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, check=False
        )
        if result.returncode == 0:
            return
        last = result.stderr.decode("utf-8", "replace").strip()
        if callable(ok_if) and ok_if():
            return  # a concurrent call made it
        if "lock" not in last.lower():
            break
        time.sleep(0.05 * (attempt + 1))
    raise IdentityError(f"{argv[0]} failed: {last}")
