"""One managed server: its home's layout, the OS user it runs as, ``pg_ctl``, and the files
the service writes into its data directory.

Layout: ``home/data`` (PGDATA), ``home/log/postgresql.log``, and the unix socket in
``home/run`` (or a short directory elsewhere, see :func:`cluster.socket_dir_for`); each
0700 and owned by the instance's own OS user (:mod:`strongroom.engines.identity`) when the
service runs as root. That user is the tenant's reach once it is superuser of its server
(``COPY … TO/FROM PROGRAM``): it can replace any name in the home with a link at any
moment. So whatever root writes or reads there goes through a directory descriptor and
never follows a link (:mod:`strongroom.engines.beneath`): a file is written under a new
name with ``O_EXCL`` and renamed over the old one; a file read must be a regular file of
the server's user.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import secrets
import shlex
import stat
from collections.abc import Mapping
from pathlib import Path

from strongroom.engines import beneath, process
from strongroom.engines.errors import EngineError, InstanceError
from strongroom.engines.identity import (
    IdentityError,
    InstanceIdentity,
    give_tree,
    name_for,
    remove_tree,
)
from strongroom.engines.postgresql import cluster

START_ATTEMPTS = 5
LEGACY_OS_USER = "postgres"  # instances created before each had an OS user of its own
LOG_NAME = "log/postgresql.log"
LOG_TAIL_BYTES = 16384
INCLUDE_LINES = (
    "\n# Strongroom settings (keep these lines last)\n"
    "include 'strongroom.conf'\n"
    "include_if_exists 'strongroom-recovery.conf'\n"
    "include 'strongroom-port.conf'\n"
)


class ManagedServer:
    """The server living in ``home``, run as ``identity``."""

    def __init__(
        self,
        home: Path,
        identity: InstanceIdentity,
        *,
        bin_dir: Path,
        bind_address: str,
        timeout: float,
    ) -> None:
        self.home = Path(home)
        self.identity = identity
        self.bin_dir = bin_dir
        self.bind_address = bind_address
        self.timeout = timeout

    # -- who runs it ------------------------------------------------------------------
    @staticmethod
    def new_identity(home: Path) -> InstanceIdentity:
        """The OS user of a new instance in ``home`` (created; the service's own user
        when it is not root)."""
        try:
            return InstanceIdentity.for_home(home)
        except (IdentityError, OSError) as exc:
            raise InstanceError(f"could not create the instance's OS user: {exc}") from exc

    @staticmethod
    def identity_of(home: Path) -> InstanceIdentity:
        """Who the server in ``home`` runs as: the owner of its data directory (``pg_ctl``
        must run as that user); the service's user when there is none or it is ours."""
        try:
            st = os.lstat(Path(home) / "data")
        except OSError:
            st = None
        if os.geteuid() != 0 or st is None or st.st_uid == os.geteuid():
            found = InstanceIdentity.lookup(name_for(home)) if os.geteuid() == 0 else None
            return found or InstanceIdentity.current()
        try:
            entry = pwd.getpwuid(st.st_uid)
        except KeyError:
            return InstanceIdentity.current()
        return InstanceIdentity(entry.pw_name, entry.pw_uid, entry.pw_gid)

    # -- layout ------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def run(self) -> Path:
        return cluster.socket_dir_for(self.home)

    @property
    def log(self) -> Path:
        return self.home / LOG_NAME

    def tool(self, name: str) -> Path:
        return self.bin_dir / name

    def prepare_home(self) -> None:
        """A new, empty home: 0700 directories of the instance's user."""
        if len(os.fsencode(self.run)) > cluster.UNIX_SOCKET_DIR_MAX:
            raise InstanceError(f"socket directory path is too long: {self.run}")
        if (self.data / "postmaster.pid").exists() and self.running():
            raise InstanceError("a server is already running in this instance home")
        if self.home.is_symlink():
            raise InstanceError("the instance home is a symbolic link")
        if self.home.exists():
            remove_tree(self.home)
        self.home.mkdir(mode=0o700, parents=True)
        self.identity.private_dir(self.home)
        for path in (self.data, self.log.parent):
            self.identity.private_dir(path)
        self.ensure_socket_dir()

    def ensure_socket_dir(self) -> None:
        try:
            cluster.ensure_socket_dir(self.run, self.identity)
        except PermissionError as exc:
            raise InstanceError(str(exc)) from exc

    def chown_tree(self) -> None:
        """Give everything in the home to the instance's user (after a restore laid it
        out as root, or when a server of the shared ``postgres`` user is adopted). Walks
        by descriptor and never follows a link; refuses files with other hard links.
        What is the user's already (a restore makes its files so) is left as it is: a
        chown to the same owner still dirties the inode, which the server's first start
        must then write again."""
        owner = self.identity.owner
        if owner is None:
            return
        try:
            give_tree(self.home, *owner)
        except IdentityError as exc:
            raise InstanceError(str(exc)) from exc

    # -- files root writes and reads ------------------------------------------------------
    def write_file(self, name: str, text: str) -> None:
        """Replace ``data/name`` with ``text`` (0600, the server's user's): written under a
        new name beneath the data directory's descriptor and renamed over the old one,
        so a link or a hard link the tenant left there is replaced, never written through."""
        if "/" in name:
            raise ValueError(name)
        with beneath.directory(self.home) as home_fd:
            data_fd = beneath.open_beneath(home_fd, "data", os.O_RDONLY | os.O_DIRECTORY)
            try:
                write_beneath(data_fd, name, text.encode(), self.identity.owner)
            finally:
                os.close(data_fd)

    def read_file(self, relname: str, limit: int) -> bytes:
        """The last ``limit`` bytes of ``home/relname``, if it is a regular file of the
        server's user (a link to a secret, or a hard link to a file of another user, is
        refused)."""
        with beneath.directory(self.home) as home_fd:
            fd, st = beneath.open_regular(home_fd, relname)
        try:
            if self.identity.name is not None and st.st_uid != self.identity.uid:
                raise beneath.EscapeError(errno.EPERM, f"{relname} is not the server's file")
            return os.pread(fd, limit, max(0, st.st_size - limit))
        finally:
            os.close(fd)

    def list_dir(self, relname: str) -> list[str]:
        """The names in the directory ``home/relname``, reached without a link."""
        with beneath.directory(self.home) as home_fd:
            fd = beneath.open_beneath(home_fd, relname, os.O_RDONLY | os.O_DIRECTORY)
            try:
                with os.scandir(fd) as listing:
                    return [entry.name for entry in listing]
            finally:
                os.close(fd)

    def remove_file(self, relname: str) -> None:
        """Unlink ``home/relname`` (its directory reached without a link), if present."""
        parent, _, name = relname.rpartition("/")
        with beneath.directory(self.home) as home_fd:
            fd = beneath.open_beneath(home_fd, parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)
            finally:
                os.close(fd)

    def log_size(self) -> int:
        try:
            with beneath.directory(self.home) as home_fd:
                fd, st = beneath.open_regular(home_fd, LOG_NAME)
            os.close(fd)
        except OSError:
            return 0
        return st.st_size

    def log_since(self, offset: int, lines: int = 15) -> str:
        """The server log's lines written after ``offset`` (the last ``lines``)."""
        try:
            size = self.log_size()
            raw = self.read_file(LOG_NAME, min(LOG_TAIL_BYTES, max(0, size - offset)))
        except OSError:
            return ""
        text = raw.decode("utf-8", "replace")
        kept = [ln for ln in text.strip().splitlines() if ln.strip()]
        return "\n".join(kept[-lines:])

    def write_base_conf(
        self, extra: Mapping[str, str | int], *, restoring_as: str | None = None
    ) -> None:
        """The managed settings and the authentication files; ``restoring_as``: the role
        the service's OS user may use on the local socket without a password until the
        restore has given it one (see :func:`cluster.render_hba`)."""
        settings: dict[str, str | int] = {
            "listen_addresses": self.bind_address,
            "unix_socket_directories": str(self.run),
            "unix_socket_permissions": "0700",
            "password_encryption": "scram-sha-256",
            "wal_level": "replica",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "max_slot_wal_keep_size": cluster.SLOT_WAL_KEEP_SIZE,
            "wal_compression": "on",
            "full_page_writes": "on",
            "logging_collector": "off",
            "log_line_prefix": "%m [%p] ",
            "lc_messages": "C",
        }
        settings.update(extra)
        self.write_file("strongroom.conf", cluster.render_conf(settings))
        self.write_hba(restoring_as=restoring_as)

    def write_hba(self, *, restoring_as: str | None = None) -> None:
        service_user = pwd.getpwuid(os.geteuid()).pw_name
        try:
            ident = cluster.render_ident(service_user if restoring_as else None, restoring_as)
        except ValueError as exc:
            raise InstanceError(str(exc)) from exc
        self.write_file("pg_ident.conf", ident)
        self.write_file(
            "pg_hba.conf", cluster.render_hba(self.bind_address, peer_map=bool(restoring_as))
        )

    def reload(self) -> None:
        """Make a running server read its configuration files again."""
        process.run(
            self.identity.argv([self.tool("pg_ctl"), "reload", "-D", self.data, "-s"]),
            timeout=60,
        )

    # -- pg_ctl ----------------------------------------------------------------------------
    def running(self) -> bool:
        if not self.data.is_dir():
            return False
        # Only the exit status counts: what pg_ctl prints after it (data/postmaster.opts)
        # is the tenant's to make as large as it likes.
        result = process.run(
            self.identity.argv([self.tool("pg_ctl"), "status", "-D", self.data]),
            timeout=60,
            check=False,
            keep_stdout=False,
        )
        return result.returncode == 0

    def start(self, preferred_port: int | None, *, timeout: float | None = None) -> int:
        """Start the server on ``preferred_port`` if it is free, else on another free
        port; wait until it accepts connections, at most ``timeout`` seconds (default the
        server's). Returns the port.

        A recorded port found taken (by any program on the host, another tenant's too)
        moves the server rather than failing: refusing would let anyone keep an instance
        down. The port is always the service's choice, though (see :meth:`_fixed_settings`)."""
        self.ensure_socket_dir()  # outside the home it may be gone after a reboot
        wait = self.timeout if timeout is None else min(timeout, self.timeout)
        tried: list[int] = []
        port = preferred_port
        for _ in range(START_ATTEMPTS):
            if port is None or not cluster.port_is_free(self.bind_address, port):
                port = cluster.free_port(self.bind_address, avoid=tried)
            tried.append(port)
            # The socket directory too, at every start: an instance made by an earlier
            # release may have had it elsewhere (see cluster.socket_dir_for).
            self.write_file(
                "strongroom-port.conf",
                cluster.render_conf({"port": port, "unix_socket_directories": str(self.run)}),
            )
            size_before = self.log_size()
            result = process.run(
                self.identity.argv(
                    [
                        self.tool("pg_ctl"),
                        "start",
                        "-D",
                        self.data,
                        "-l",
                        self.log,
                        "-o",
                        self._fixed_settings(port),
                        "-w",
                        "-t",
                        str(max(1, int(wait))),
                        "-s",
                    ]
                ),
                timeout=wait + 60,
                check=False,
            )
            if result.returncode == 0:
                return port
            tail = self.log_since(size_before) or result.stderr.strip()
            if "Address already in use" in tail or "could not create any TCP/IP" in tail:
                port = None
                continue
            with contextlib.suppress(EngineError):
                self.stop(mode="immediate")
            raise InstanceError(f"PostgreSQL did not start: {tail}")
        raise InstanceError(f"PostgreSQL did not start: no free port (tried {tried})")

    def _fixed_settings(self, port: int) -> str:
        """``pg_ctl -o``: where the server listens, as ``-c`` options, which outrank every
        configuration file. postgresql.auto.conf is read after ours, and a tenant that is
        superuser there (``ALTER SYSTEM``) could otherwise take another instance's port or
        listen elsewhere. pg_ctl hands these to ``/bin/sh``: each is quoted."""
        settings = {
            "port": port,
            "listen_addresses": self.bind_address,
            "unix_socket_directories": self.run,
        }
        return " ".join(f"-c {shlex.quote(f'{key}={value}')}" for key, value in settings.items())

    def stop(self, mode: str = "fast") -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        result = process.run(
            self.identity.argv(
                [self.tool("pg_ctl"), "stop", "-D", self.data, "-m", mode, "-w", "-t", "120", "-s"]
            ),
            timeout=180,
            check=False,
        )
        if result.returncode != 0 and self.running():
            if mode != "immediate":
                self.stop(mode="immediate")
                return
            raise InstanceError(f"PostgreSQL did not stop: {result.stderr.strip()}")

    # -- the end --------------------------------------------------------------------------
    def destroy(self, *, quietly: bool = False) -> None:
        """Stop the server, remove the home, its socket directory and its OS user;
        ``quietly`` after a failure: as much of it as can be done."""
        mine = InstanceIdentity.lookup(name_for(self.home)) if os.geteuid() == 0 else None
        has_home = self.home.exists() and not self.home.is_symlink()
        if has_home:
            if quietly:
                with contextlib.suppress(Exception):
                    self.stop(mode="immediate")
            else:
                self.stop(mode="fast")
        try:
            # No program of the tenant's may swap names in the home while it is removed.
            if mine is not None:
                mine.kill_processes()
            if has_home:
                remove_tree(self.home)
            self._remove_outside_socket_dir()
        except (IdentityError, OSError) as exc:
            if not quietly:
                raise InstanceError(f"could not remove the instance's files: {exc}") from exc
        if mine is not None and mine.name is not None:
            try:
                mine.remove()
            except IdentityError as exc:
                raise InstanceError(f"could not remove the instance's OS user: {exc}") from exc

    def _remove_outside_socket_dir(self) -> None:
        run = self.run
        if run.is_relative_to(self.home):
            return
        mine = InstanceIdentity.lookup(name_for(self.home)) if os.geteuid() == 0 else None
        owners = {self.identity.uid} | ({mine.uid} if mine else set())
        with contextlib.suppress(OSError):
            st = run.lstat()
            if stat.S_ISDIR(st.st_mode) and st.st_uid in owners:
                remove_tree(run)

    # -- instances made before each had an OS user --------------------------------------
    def adopt(self, old: InstanceIdentity) -> None:
        """Move a stopped server of ``old`` (the shared ``postgres`` user) to this server's
        own identity: its home and socket directory change owner."""
        self.chown_tree()
        run = self.run
        if not run.is_relative_to(self.home) and self.identity.owner is not None:
            with contextlib.suppress(FileNotFoundError), beneath.directory(run) as fd:
                if os.fstat(fd).st_uid == old.uid:
                    os.fchown(fd, *self.identity.owner)
                    os.fchmod(fd, 0o700)


def write_beneath(dir_fd: int, name: str, data: bytes, owner: tuple[int, int] | None) -> None:
    """``name`` in ``dir_fd`` replaced by a new 0600 file holding ``data``."""
    temp = f".{name}.{secrets.token_hex(6)}"
    fd = beneath.open_beneath(dir_fd, temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(data)
        if owner is not None:
            os.fchown(fd, *owner)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    os.close(fd)
    os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
