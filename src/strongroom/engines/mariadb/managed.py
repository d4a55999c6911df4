"""Managed MariaDB servers: create, first boot, start, stop and destroy, each instance
under an OS user of its own.

When the service runs as root, each managed instance has an OS user of its own
(``os_user`` in its connection), made with the instance and removed with it: mariadbd runs
as it, its home and every directory in it are 0700 and its, and the tools that touch its
files (mariabackup, mbstream) run as it too. ``secure_file_priv`` points at the instance's
``files`` directory, so a tenant with the FILE privilege reads and writes nothing else. An
instance made before this (its files owned by ``mysql``) is handed to a user of its own on
its next start. Not root: everything runs as the service's user.

The first boot of a data directory (new or restored) starts ``mariadbd`` once with an
``--init-file`` that (re)creates the service accounts with new passwords (a restored server
never shares credentials with its source), then creates the request's databases and users.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import pymysql

from strongroom.engines import process
from strongroom.engines.base import Connection, InstanceRequest
from strongroom.engines.errors import (
    EngineError,
    InstanceError,
    InvalidRequestError,
)
from strongroom.engines.identity import IdentityError, InstanceIdentity, name_for, remove_tree
from strongroom.engines.mariadb import accounts, config, server
from strongroom.engines.mariadb.accounts import ADMIN_USER, BACKUP_USER
from strongroom.engines.mariadb.server import Layout
from strongroom.engines.mariadb.sessions import sql_error
from strongroom.engines.mariadb.tools import Tools, failure_reason
from strongroom.engines.mariadb.users import tenant_databases

START_TIMEOUT = 120.0
PORT_ATTEMPTS = 3
INSTALL_TIMEOUT = 600.0


class ManagedServers:
    """The managed servers of one engine: ``bind_address`` is where they listen (each on
    a free port), ``timeout`` the seconds a tool may take."""

    def __init__(self, *, bind_address: str, timeout: float) -> None:
        self.bind_address = bind_address
        self.timeout = timeout

    def create(self, tools: Tools, home: Path, request: InstanceRequest) -> Connection:
        """A new, empty server in ``home`` with the request's databases and users."""
        layout = Layout(Path(home))
        if layout.datadir.exists() or layout.config.exists():
            raise InstanceError("the instance directory already holds a MariaDB server")
        try:
            accounts.check_request(request)
        except InvalidRequestError as exc:
            raise InstanceError(str(exc)) from None
        identity = InstanceIdentity.current()
        try:
            identity = self.open_home(layout, InstanceError)
            self.write_config(layout, identity)
            argv = [
                tools.install_db,
                f"--defaults-file={layout.config}",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ]
            if identity.name is not None:
                argv.append(f"--user={identity.name}")
            try:
                process.run(argv, cwd=layout.home, timeout=min(self.timeout, INSTALL_TIMEOUT))
            except process.ProcessError as exc:
                raise InstanceError(
                    f"the data directory could not be created: {failure_reason(exc)}"
                ) from None
            server.close_datadir(layout)
            return self.boot(layout, identity, tools, request, InstanceError)
        except BaseException:
            self.discard(layout, identity)
            raise

    def open_home(self, layout: Layout, error: Callable[[str], EngineError]) -> InstanceIdentity:
        """The new instance's OS user, and its home and directories, 0700 and its."""
        try:
            identity = InstanceIdentity.for_home(layout.home)
        except IdentityError as exc:
            raise error(f"the instance's OS user could not be created: {exc}") from None
        server.prepare_home(layout, identity)
        return identity

    def write_config(
        self, layout: Layout, identity: InstanceIdentity, extra: dict[str, str] | None = None
    ) -> None:
        server.write_config(
            layout,
            port=server.free_port(self.bind_address),
            bind_address=self.bind_address,
            identity=identity,
            extra=extra,
        )

    def boot(
        self,
        layout: Layout,
        identity: InstanceIdentity,
        tools: Tools,
        request: InstanceRequest,
        error: Callable[[str], EngineError],
        *,
        timeout: float = START_TIMEOUT,
    ) -> Connection:
        """First start of a new data directory: (re)create the service accounts with new
        passwords through an init file, then apply the request's databases and users.
        The start waits at most ``timeout`` seconds (and ``START_TIMEOUT``)."""
        admin_password = secrets.token_urlsafe(24)
        backup_password = secrets.token_urlsafe(24)
        init_file = layout.private_dir / "init.sql"
        init_file.unlink(missing_ok=True)
        config.write_private(
            init_file,
            accounts.service_accounts_sql(admin_password, backup_password),
            owner=identity.owner,
        )
        try:
            self._start(
                layout,
                identity,
                tools,
                admin_password,
                error=error,
                init_file=init_file,
                timeout=timeout,
            )
        finally:
            init_file.unlink(missing_ok=True)
        try:
            with server.session(layout, ADMIN_USER, admin_password) as cursor:
                accounts.drop_os_user_accounts(cursor)
                accounts.apply_request(cursor, request)
                users = accounts.list_users(cursor)
                databases = tenant_databases(cursor)
        except (pymysql.MySQLError, ValueError, InvalidRequestError) as exc:
            server.kill(layout)
            hidden = [admin_password, backup_password, *(u.password for u in request.users)]
            raise error(
                f"setting up databases and users failed: {sql_error(exc, hidden)}"
            ) from None
        return {
            "host": self.bind_address,
            "port": server.configured_port(layout),
            "socket": str(layout.socket),
            "datadir": str(layout.datadir),
            "defaults_file": str(layout.config),
            "admin_user": ADMIN_USER,
            "admin_password": admin_password,
            "backup_user": BACKUP_USER,
            "backup_password": backup_password,
            "managed": True,
            "os_user": identity.name,
            "instance_uid": secrets.token_hex(16),
            "users": users,
            "databases": databases,
        }

    def _start(
        self,
        layout: Layout,
        identity: InstanceIdentity,
        tools: Tools,
        admin_password: str,
        *,
        error: Callable[[str], EngineError],
        init_file: Path | None = None,
        timeout: float = START_TIMEOUT,
    ) -> None:
        """Start, choosing another free port when the configured one was taken."""
        for attempt in range(PORT_ATTEMPTS):
            if not server.port_is_free(self.bind_address, server.configured_port(layout)):
                server.set_port(layout, server.free_port(self.bind_address))
            try:
                server.start(
                    layout,
                    identity=identity,
                    mariadbd=tools.mariadbd,
                    user=ADMIN_USER,
                    password=admin_password,
                    timeout=min(self.timeout, START_TIMEOUT, timeout),
                    init_file=init_file,
                    error=error,
                )
                return
            except EngineError as exc:
                in_use = "Address already in use" in str(exc) or "Bind on TCP/IP" in str(exc)
                if not in_use or attempt == PORT_ATTEMPTS - 1:
                    raise
                server.set_port(layout, server.free_port(self.bind_address))

    def start(self, tools: Tools, home: Path, connection: Connection) -> Connection:
        """Make sure the server runs (idempotent); the connection as it is now."""
        layout = Layout(Path(home))
        if not layout.config.exists() or not layout.datadir.exists():
            raise InstanceError("the instance's data directory is missing")
        password = str(connection["admin_password"])
        updated = dict(connection)
        if server.running_pid(layout) is None:
            identity = _identity_of(layout, connection)
            if identity.name is not None and layout.home.stat().st_uid != identity.uid:
                # Made before instances had OS users of their own (their server ran as
                # "mysql"), or its user was lost: its files go to its own user now.
                server.hand_over(layout, identity)
            updated["os_user"] = identity.name
            self._start(layout, identity, tools, password, error=InstanceError)
        else:
            server.wait_ready(layout, ADMIN_USER, password, timeout=START_TIMEOUT)
        updated["port"] = server.configured_port(layout)
        return updated

    def stop(self, home: Path) -> None:
        server.stop(Layout(Path(home)))

    def destroy(self, home: Path, connection: Connection) -> None:
        layout = Layout(Path(home))
        server.stop(layout)
        # No program of the tenant's left to swap entries while the home goes, and none
        # followed (see identity.remove_tree).
        identities = _identities(layout, connection)
        try:
            for identity in identities:
                identity.kill_processes()
        except IdentityError as exc:
            raise InstanceError(f"the instance's programs could not be stopped: {exc}") from None
        try:
            remove_tree(layout.home)
        except OSError:
            raise InstanceError("the instance directory could not be removed") from None
        for identity in identities:
            try:
                identity.remove()
            except IdentityError as exc:
                raise InstanceError(f"the instance's OS user could not be removed: {exc}") from None

    def discard(self, layout: Layout, identity: InstanceIdentity) -> None:
        """After a failed create or restore: nothing left running, nothing left on disk,
        no OS user left."""
        with contextlib.suppress(Exception):
            server.kill(layout)
        with contextlib.suppress(IdentityError):
            identity.kill_processes()
        with contextlib.suppress(OSError):
            remove_tree(layout.home)
        with contextlib.suppress(IdentityError):
            identity.remove()


def _identity_of(layout: Layout, connection: Connection) -> InstanceIdentity:
    """The OS user a managed instance runs as: the one it recorded, else one of its own,
    made now (the service's own user when the service is not root)."""
    if os.geteuid() != 0:
        return InstanceIdentity.current()
    name = connection.get("os_user")
    found = InstanceIdentity.lookup(name) if isinstance(name, str) else None
    if found is not None:
        return found
    try:
        return InstanceIdentity.for_home(layout.home)
    except IdentityError as exc:
        raise InstanceError(f"the instance's OS user could not be created: {exc}") from None


def _identities(layout: Layout, connection: Connection) -> list[InstanceIdentity]:
    """The OS users the instance recorded or would have had (an interrupted build
    records none)."""
    if os.geteuid() != 0:
        return []
    names = {connection.get("os_user"), name_for(layout.home)}
    found = (InstanceIdentity.lookup(name) for name in names if isinstance(name, str))
    return [identity for identity in found if identity is not None]
