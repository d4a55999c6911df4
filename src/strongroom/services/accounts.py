"""Users, databases and root of a managed instance (Trove's user, database and root calls).

Each call finds the instance as the caller may see it (another project's is 404, as for
every instance call), checks Trove's policy rule, opens the instance's sealed connection
and hands the work to the datastore's :class:`AccountManager` on the instance's own
server. Datastores without one (SQLite) and external instances answer 501, as Trove does
for an operation a datastore does not support. Changes are recorded back: the sealed
connection and the view's ``connection`` show the users and databases the server holds.
Calls on one instance run one at a time, so two changes cannot overwrite each other's
record.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import attrs

from strongroom.domain.errors import (
    BadRequestError,
    NotFoundError,
    NotImplementedByDatastoreError,
    UnprocessableError,
)
from strongroom.domain.model import Instance, InstanceKind, InstanceStatus, RequestContext
from strongroom.engines.base import (
    AccountInfo,
    AccountManager,
    Connection,
    DatabaseSpec,
    Engine,
    UserChanges,
    UserSpec,
)
from strongroom.engines.errors import AccountNotFoundError, EngineError, InvalidRequestError
from strongroom.services.datastores import DatastoreCatalog
from strongroom.services.secrets_box import SecretBox
from strongroom.services.use_case import UseCase
from strongroom.services.visibility import visible_instance

T = TypeVar("T")
ROOT_ENABLED = "root_enabled"  # recorded in the sealed connection: "was root ever enabled"

# Trove's operation names, as its "not supported" fault shows them.
OPERATIONS = {
    "user": "users",
    "user_access": "user access",
    "database": "databases",
    "root": "root",
}


@dataclass(frozen=True)
class _Target:
    instance: Instance
    engine: Engine
    manager: AccountManager
    connection: Connection


def _own_copy(managers: Mapping[str, AccountManager]) -> dict[str, AccountManager]:
    return dict(managers)


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class AccountService(UseCase):
    _catalog: DatastoreCatalog
    _secrets: SecretBox
    _managers: dict[str, AccountManager] = attrs.field(converter=_own_copy)
    _locks: dict[str, threading.Lock] = attrs.field(init=False, factory=dict)
    _locks_guard: threading.Lock = attrs.field(init=False, factory=threading.Lock)

    # -- users ----------------------------------------------------------------------
    def list_users(self, ctx: RequestContext, *, instance_id: str) -> list[AccountInfo]:
        with self._target(ctx, instance_id, "user", "index") as t:
            return self._call(t, lambda: t.manager.list_users(t.connection))

    def get_user(
        self, ctx: RequestContext, *, instance_id: str, name: str, host: str
    ) -> AccountInfo:
        with self._target(ctx, instance_id, "user", "show") as t:
            for user in self._call(t, lambda: t.manager.list_users(t.connection)):
                if user.name == name and user.host.lower() == host.lower():
                    return user
        raise NotFoundError(f"User {_user_id(name, host)} cannot be found on the instance.")

    def create_users(
        self, ctx: RequestContext, *, instance_id: str, users: Sequence[UserSpec]
    ) -> None:
        with self._target(ctx, instance_id, "user", "create") as t:
            self._change(t, lambda: t.manager.create_users(t.connection, users))

    def delete_user(self, ctx: RequestContext, *, instance_id: str, name: str, host: str) -> None:
        with self._target(ctx, instance_id, "user", "delete") as t:
            self._change(t, lambda: t.manager.delete_user(t.connection, name, host))

    def change_passwords(
        self, ctx: RequestContext, *, instance_id: str, users: Sequence[UserSpec]
    ) -> None:
        with self._target(ctx, instance_id, "user", "update_all") as t:
            self._call(t, lambda: t.manager.change_passwords(t.connection, users))

    def update_user(
        self,
        ctx: RequestContext,
        *,
        instance_id: str,
        name: str,
        host: str,
        changes: UserChanges,
    ) -> None:
        with self._target(ctx, instance_id, "user", "update") as t:
            self._change(t, lambda: t.manager.update_user(t.connection, name, host, changes))

    def user_databases(
        self, ctx: RequestContext, *, instance_id: str, name: str, host: str
    ) -> tuple[str, ...]:
        with self._target(ctx, instance_id, "user_access", "index") as t:
            for user in self._call(t, lambda: t.manager.list_users(t.connection)):
                if user.name == name and user.host.lower() == host.lower():
                    return user.databases
        raise NotFoundError(f"User {_user_id(name, host)} cannot be found on the instance.")

    def grant(
        self,
        ctx: RequestContext,
        *,
        instance_id: str,
        name: str,
        host: str,
        databases: Sequence[str],
    ) -> None:
        with self._target(ctx, instance_id, "user_access", "update") as t:
            self._change(t, lambda: t.manager.grant(t.connection, name, host, databases))

    def revoke(
        self, ctx: RequestContext, *, instance_id: str, name: str, host: str, database: str
    ) -> None:
        with self._target(ctx, instance_id, "user_access", "delete") as t:
            self._change(t, lambda: t.manager.revoke(t.connection, name, host, database))

    # -- databases ------------------------------------------------------------------
    def list_databases(self, ctx: RequestContext, *, instance_id: str) -> list[str]:
        with self._target(ctx, instance_id, "database", "index") as t:
            return self._call(t, lambda: t.manager.list_databases(t.connection))

    def create_databases(
        self, ctx: RequestContext, *, instance_id: str, databases: Sequence[DatabaseSpec]
    ) -> None:
        with self._target(ctx, instance_id, "database", "create") as t:
            self._change(t, lambda: t.manager.create_databases(t.connection, databases))

    def delete_database(self, ctx: RequestContext, *, instance_id: str, name: str) -> None:
        with self._target(ctx, instance_id, "database", "delete") as t:
            self._change(t, lambda: t.manager.delete_database(t.connection, name))

    def show_database(self, ctx: RequestContext, *, instance_id: str, name: str) -> None:
        """Trove routes this call and checks its rule, then answers that it is not
        implemented (clients list the databases instead)."""
        with self._target(ctx, instance_id, "database", "show"):
            raise NotImplementedByDatastoreError("Showing one database is not implemented.")

    # -- root -----------------------------------------------------------------------
    def enable_root(
        self, ctx: RequestContext, *, instance_id: str, password: str | None = None
    ) -> tuple[str, str]:
        """Root's name and password: ``password``, or a generated one."""
        with self._target(ctx, instance_id, "root", "create") as t:

            def enable() -> tuple[str, str]:
                credentials = t.manager.enable_root(t.connection, password)
                t.connection[ROOT_ENABLED] = True
                return credentials

            return self._change(t, enable)

    def root_enabled(self, ctx: RequestContext, *, instance_id: str) -> bool:
        with self._target(ctx, instance_id, "root", "index") as t:
            return bool(t.connection.get(ROOT_ENABLED))

    def disable_root(self, ctx: RequestContext, *, instance_id: str) -> None:
        with self._target(ctx, instance_id, "root", "delete") as t:
            if not t.connection.get(ROOT_ENABLED):
                raise NotFoundError("User root cannot be found on the instance.")
            self._call(t, lambda: t.manager.disable_root(t.connection))

    # -- the instance and its server ------------------------------------------------
    @contextmanager
    def _target(
        self, ctx: RequestContext, instance_id: str, kind: str, action: str
    ) -> Iterator[_Target]:
        with self._uow() as uow:
            instance = visible_instance(uow, ctx, instance_id)
            self._authz.enforce(ctx, f"instance:extension:{kind}:{action}", instance.project_id)
            version = self._catalog.find_version(instance.datastore_version_id)
            datastore = version.datastore_name if version else "unknown"
            manager = self._managers.get(datastore)
            if version is None or manager is None or instance.kind is InstanceKind.EXTERNAL:
                kind_name = "external " + datastore if manager is not None else datastore
                raise NotImplementedByDatastoreError(
                    f"The '{OPERATIONS[kind]}' operation is not supported for the "
                    f"'{kind_name}' datastore."
                )
            if instance.status is not InstanceStatus.ACTIVE or instance.task is not None:
                raise UnprocessableError(
                    f"Instance {instance_id} is not currently available for an action to be "
                    f"performed (status was {instance.task or instance.status})."
                )
            sealed = uow.instances.sealed_connection(instance_id)
        if sealed is None:
            raise UnprocessableError(f"Instance {instance_id} has no connection recorded.")
        with self._lock(instance_id):
            # Opened under the lock: the record another call just saved.
            with self._uow() as uow:
                sealed = uow.instances.sealed_connection(instance_id) or sealed
            connection = self._secrets.open(sealed, bound_to=instance_id)
            yield _Target(instance, self._catalog.engine_for(version), manager, connection)

    @contextmanager
    def _lock(self, instance_id: str) -> Iterator[None]:
        with self._locks_guard:
            lock = self._locks.setdefault(instance_id, threading.Lock())
        with lock:
            yield

    @staticmethod
    def _call(target: _Target, call: Callable[[], T]) -> T:
        """Engine errors as Trove faults: a refused name 400, a missing one 404."""
        try:
            return call()
        except InvalidRequestError as exc:
            raise BadRequestError(str(exc)) from exc
        except AccountNotFoundError as exc:
            raise NotFoundError(str(exc)) from exc
        except EngineError as exc:
            raise UnprocessableError(f"Instance {target.instance.id}: {exc}") from exc

    def _change(self, target: _Target, call: Callable[[], T]) -> T:
        """Run a change, then record the connection as the server now holds it."""
        try:
            return self._call(target, call)
        finally:
            self._record(target)

    def _record(self, target: _Target) -> None:
        with self._uow(write=True) as uow:
            current = uow.instances.find_for_update(target.instance.id)
            if current is None:
                return
            current.public_connection = target.engine.public_view(target.connection)
            current.updated = self._clock.now()
            sealed = self._secrets.seal(target.connection, bound_to=current.id)
            uow.instances.save(current, sealed)
            uow.commit()


def _user_id(name: str, host: str) -> str:
    return name if host == "%" else f"{name}@{host}"


__all__ = ["AccountInfo", "AccountService", "DatabaseSpec", "UserChanges", "UserSpec"]
