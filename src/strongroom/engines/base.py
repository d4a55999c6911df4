"""The engine boundary: one engine per datastore produces and consumes byte streams.

An engine knows how to run a database server it manages (create, start, stop, destroy),
how to accept an existing ("external") server, how to stream a physical backup of either
into a sink, and how to build a new managed server from a chain of backup streams.
It knows nothing of storage, encryption or the metadata database.

A *connection* is an engine-defined, JSON-serialisable ``dict``: everything the engine needs
to reach the server again (paths, host, port, user, password, data directory, …). The
service stores it encrypted, so it may hold secrets; ``public_view`` is what users see.

``home`` is a directory the service gives a managed instance; the engine owns everything in
it (data directory, socket, logs, the SQLite file) and removes it on ``destroy_instance``.

Errors are ``EngineError`` subclasses whose message is safe to show a user: no secrets, no
argv with passwords. External tools run through :mod:`strongroom.engines.process`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

Connection = dict[str, Any]
Metadata = dict[str, Any]
MAX_CHECKED_TABLES = 1000  # row counts in a drill's report: the first this many tables


class ByteSink(Protocol):
    """Where a backup stream goes (the pipeline's chunker)."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...


class ByteSource(Protocol):
    """Where a restore stream comes from (the pipeline's verified chunk reader).

    ``read(n)`` returns at most ``n`` bytes, ``b""`` at the end; ``read()`` / ``read(-1)``
    is not used by engines (it would hold a whole backup in memory). The service's
    sources also have ``skip(n)``: bytes an engine will not use, whose chunks are then
    neither fetched nor decrypted; and ``reader_at(offset)``: another source of the same
    stream from ``offset``, so that parts of it are restored at once. Engines look for
    both and do without them.
    """

    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True)
class DatabaseSpec:
    name: str
    character_set: str | None = None  # the server's default when None
    collate: str | None = None


@dataclass(frozen=True)
class UserSpec:
    name: str
    password: str
    databases: tuple[str, ...] = ()
    host: str = "%"


@dataclass(frozen=True)
class UserChanges:
    """Trove's update of one user's attributes: what is None stays as it is."""

    name: str | None = None
    host: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class InstanceRequest:
    """What the create-instance request asked for (Trove's ``databases`` and ``users``)."""

    name: str
    databases: tuple[DatabaseSpec, ...] = ()
    users: tuple[UserSpec, ...] = ()


@dataclass(frozen=True)
class BackupResult:
    """What a finished backup stream tells the manifest.

    ``metadata`` is JSON-safe and recorded as the manifest's engine metadata; it is given
    back as ``parent`` to the next incremental backup and to ``restore_instance``.
    """

    metadata: Metadata
    incremental: bool = False


@dataclass(frozen=True)
class RestoreInput:
    """One link of a restore chain: its engine metadata and its verified plaintext stream."""

    metadata: Metadata
    stream: ByteSource


# The parent backup's whole chain, full first, opened when an engine asks for it (an
# incremental that stores what changed relative to the parent's data, not only which
# parts changed).
ParentChain = Callable[[], Sequence[RestoreInput]]


@dataclass(frozen=True)
class EngineInfo:
    datastore: str  # "sqlite", "postgresql", "mariadb"
    version: str  # installed version as datastores list it ("3", "15", "10.11")
    extra: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    datastore: str

    def detect(self) -> EngineInfo | None:
        """The installed version, or ``None`` when the server or its tools are missing."""
        ...

    # -- managed instances -------------------------------------------------------------
    def check_request(self, request: InstanceRequest) -> None:
        """Refuse, before anything is created, users and databases this engine will not
        make: reserved names (the server's own and the service's accounts), malformed
        ones. Raises ``InvalidRequestError`` (→ 400)."""
        ...

    def create_instance(self, home: Path, request: InstanceRequest) -> Connection:
        """Create and start a new, empty server in ``home``; return how to reach it."""
        ...

    def restore_instance(
        self,
        home: Path,
        chain: Sequence[RestoreInput],
        request: InstanceRequest,
        *,
        timeout: float | None = None,
    ) -> Connection:
        """Create and start a new server in ``home`` from ``chain`` (full first, then each
        incremental in order). Each stream is consumed to its end, in an order the engine
        chooses (one at a time). ``timeout``: the seconds the whole restore may take
        (``None``: each step within the engine's own); a restore out of time fails.
        Raises ``RestoreError`` and leaves nothing running when a step fails."""
        ...

    def start_instance(self, home: Path, connection: Connection) -> Connection:
        """Make sure a managed server is running (after a service restart). Idempotent."""
        ...

    def stop_instance(self, home: Path, connection: Connection) -> None: ...

    def destroy_instance(self, home: Path, connection: Connection) -> None:
        """Managed: stop the server and remove ``home``; a missing server is not an error.
        External: release what the service holds on that server (e.g. a replication slot);
        never touch its data."""
        ...

    def check_restored(
        self, home: Path, connection: Connection, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """The engine's own consistency checks of a managed instance just restored in
        ``home`` (a restore drill), then each user table's row count (the first
        :data:`MAX_CHECKED_TABLES`), all within ``timeout`` seconds (and the engine's
        own). Returns a JSON-safe report ``{"checks": {...: "ok"}, "tables": N,
        "rows": {...}}``, with ``"skipped": N, "skipped_tables": {db: {table: why}}``
        when counts too slow were skipped; raises ``CheckFailedError`` naming what
        failed. The data is the tenant's: no name or object in it is trusted."""
        ...

    # -- external instances ------------------------------------------------------------
    def register_external(self, params: Mapping[str, Any], *, project_id: str) -> Connection:
        """Validate an existing server's connection details (the operator's allow-list
        entries that serve ``project_id``, reachability, privileges) and return its
        connection. Raises ``ExternalNotAllowedError`` (→ 403) or ``InvalidExternalError``
        (→ 400)."""
        ...

    def external_identity(self, connection: Connection) -> str:
        """What makes an external registration *this* database, whatever name reached it
        (a file's device and inode, a server's host and port or system identifier): one
        project's registration keeps every other project from registering the same one."""
        ...

    # -- both ----------------------------------------------------------------------------
    def public_view(self, connection: Connection) -> dict[str, Any]:
        """The instance view's ``connection`` extension: no passwords."""
        ...

    def data_size(self, connection: Connection) -> int | None:
        """Bytes of data the server holds (for ``size`` and progress), if known."""
        ...

    def backup(
        self,
        connection: Connection,
        sink: ByteSink,
        *,
        parent: Metadata | None,
        parent_chain: ParentChain | None = None,
    ) -> BackupResult:
        """Stream a consistent physical backup into ``sink``. With ``parent`` (the parent
        backup's metadata) write only what changed since it; an engine that cannot do
        that for this parent raises ``BackupError``. ``parent_chain`` opens the parent's
        chain for an engine that reads it (the streams are consumed in any order, closed
        when done). Raises ``BackupError`` with a reason (the tool's stderr, cleaned of
        secrets) on failure."""
        ...

    def check_restorable(self, metadata: Metadata) -> None:
        """Raise ``IncompatibleBackupError`` if this engine cannot restore that backup
        (another major version, another page size, …)."""
        ...


# What a batch reports as ``archived_through`` when it stopped short of the log's end (a
# bound on its size or time): it covers no time the batch before it did not, and more of
# the log is waiting.
NOT_COVERED = datetime(1970, 1, 1)


@dataclass(frozen=True)
class ArchivedWal:
    """One archived batch of a server's log: positions ``[start, stop)`` in the engine's
    own terms, every commit up to ``archived_through`` (naive UTC; :data:`NOT_COVERED`
    when it stopped short), and ``metadata`` for the batch's manifest (given back to the
    restore)."""

    start: int
    stop: int
    archived_through: datetime
    metadata: Metadata


@runtime_checkable
class PointInTimeEngine(Protocol):
    """An engine that archives its servers' log continuously and restores to a time."""

    def start_archiving(self, connection: Connection) -> int:
        """Keep the log from now on; return the position archiving starts from."""
        ...

    def archive_batch(self, connection: Connection, sink: ByteSink, *, start: int) -> ArchivedWal:
        """Stream the log from ``start`` to now into ``sink``; ``start`` is taken as stored."""
        ...

    def stop_archiving(self, connection: Connection) -> None: ...

    def restore_instance(
        self,
        home: Path,
        chain: Sequence[RestoreInput],
        request: InstanceRequest,
        *,
        archive: Sequence[RestoreInput] = (),
        target_time: datetime | None = None,
        timeout: float | None = None,
    ) -> Connection: ...


@dataclass(frozen=True)
class AccountInfo:
    """A tenant's user on a managed server: its name, host and the databases it reaches."""

    name: str
    host: str = "%"
    databases: tuple[str, ...] = ()


@runtime_checkable
class AccountManager(Protocol):
    """Trove's user, database and root calls on a managed server of one datastore.

    Every method works through the service's own account (the stored ``connection``) and
    refuses names the server or the service reserves (``InvalidRequestError`` → 400); a
    user or database that does not exist raises ``AccountNotFoundError`` (→ 404). Methods
    that change accounts also refresh ``connection["users"]`` / ``connection["databases"]``
    from the server, so that what ``public_view`` shows is what the server holds. Users
    made here get privileges on their databases only: no superuser, replication, FILE or
    SUPER. ``host`` is MariaDB's account host; PostgreSQL takes only ``"%"``.
    """

    def list_users(self, connection: Connection) -> list[AccountInfo]: ...

    def create_users(self, connection: Connection, users: Sequence[UserSpec]) -> None: ...

    def delete_user(self, connection: Connection, name: str, host: str) -> None: ...

    def change_passwords(self, connection: Connection, users: Sequence[UserSpec]) -> None: ...

    def update_user(
        self, connection: Connection, name: str, host: str, changes: UserChanges
    ) -> None:
        """Rename the account, move it to another host, or set its password (each when
        given); its privileges go with it. A new name or host already taken is
        ``InvalidRequestError``."""
        ...

    def grant(
        self, connection: Connection, name: str, host: str, databases: Sequence[str]
    ) -> None: ...

    def revoke(self, connection: Connection, name: str, host: str, database: str) -> None: ...

    def list_databases(self, connection: Connection) -> list[str]: ...

    def create_databases(self, connection: Connection, databases: Sequence[DatabaseSpec]) -> None:
        """Create those that do not exist (an existing one is left as it is); an unknown
        character set or collation is ``InvalidRequestError``."""
        ...

    def delete_database(self, connection: Connection, name: str) -> None: ...

    def enable_root(self, connection: Connection, password: str | None = None) -> tuple[str, str]:
        """Create the datastore's root account, or reset its password: ``(name, password)``
        with ``password``, or a new generated one (shown once)."""
        ...

    def disable_root(self, connection: Connection) -> None: ...
