"""Instance use cases: create (empty, external or restored from a backup), show, list,
delete."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

import attrs

from strongroom.domain import quotas
from strongroom.domain.errors import (
    BadRequestError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    OverLimitError,
    UnprocessableError,
)
from strongroom.domain.model import (
    RESTORABLE_STATES,
    BackupId,
    DatastoreVersion,
    Instance,
    InstanceId,
    InstanceKind,
    InstanceStatus,
    JobKind,
    RequestContext,
)
from strongroom.domain.ports import UnitOfWork
from strongroom.engines.errors import (
    ExternalNotAllowedError,
    InvalidExternalError,
    InvalidRequestError,
)
from strongroom.pipeline.checksum import sha256_hex
from strongroom.services.commands import CreateInstance
from strongroom.services.datastores import DatastoreCatalog
from strongroom.services.jobs import JobDispatcher
from strongroom.services.pitr_policy import PitrStatus, restore_base, status_of
from strongroom.services.quotas import INSTANCES, project_limit
from strongroom.services.rules import Flavor, ServiceRules
from strongroom.services.secrets_box import SecretBox
from strongroom.services.use_case import UseCase
from strongroom.services.visibility import visible_backup, visible_instance

log = logging.getLogger(__name__)
# The row locked while an external registration is checked (made by migration 0007): no
# project id is empty.
REGISTRATION_LOCK = ("", "external_registrations")


@dataclass(frozen=True)
class InstanceView:
    """An instance with what its view needs beyond the row."""

    instance: Instance
    version: DatastoreVersion | None
    backup_running: bool
    # The newest backup whose restore drill passed, and when that drill finished.
    last_restorable_backup_id: str | None = None
    last_verified_restorable_at: datetime | None = None
    pitr: PitrStatus | None = None


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class InstanceService(UseCase):
    _catalog: DatastoreCatalog
    _jobs: JobDispatcher
    _secrets: SecretBox
    _rules: ServiceRules

    # -- flavors -------------------------------------------------------------------
    def flavors(self) -> tuple[Flavor, ...]:
        return self._rules.flavors

    def flavor(self, flavor_id: str) -> Flavor:
        for flavor in self._rules.flavors:
            if flavor.id == flavor_id:
                return flavor
        raise NotFoundError(f"Flavor {flavor_id} could not be found.")

    # -- queries -------------------------------------------------------------------
    def get(self, ctx: RequestContext, *, instance_id: str) -> InstanceView:
        with self._uow() as uow:
            instance = visible_instance(uow, ctx, instance_id)
            self._authz.enforce(ctx, "instance:show", instance.project_id)
            return self._view(uow, instance)

    def list(self, ctx: RequestContext, *, offset: int, limit: int | None) -> list[InstanceView]:
        self._authz.enforce(ctx, "instance:index", ctx.project_id)
        page = min(limit or self._rules.page_size, self._rules.page_size)
        if page <= 0:
            raise BadRequestError("limit must be a positive integer.")
        with self._uow() as uow:
            return [self._view(uow, i) for i in uow.instances.list(ctx.project_id, offset, page)]

    def _view(self, uow: UnitOfWork, instance: Instance) -> InstanceView:
        running = bool(uow.backups.running_for_instance(instance.id))
        restorable = uow.backups.last_restorable(instance.id)
        return InstanceView(
            instance,
            self._catalog.find_version(instance.datastore_version_id),
            running,
            restorable.id if restorable else None,
            restorable.drill.at if restorable and restorable.drill else None,
            status_of(uow, instance, self._clock.now()),
        )

    # -- create --------------------------------------------------------------------
    def create(self, ctx: RequestContext, *, command: CreateInstance) -> InstanceView:
        self._authz.enforce(ctx, "instance:create", ctx.project_id)
        if command.host is not None:
            self._authz.enforce(ctx, "instance:create:host", ctx.project_id)
        version = self._resolve_version(command.datastore_type, command.datastore_version)
        engine = self._catalog.engine_for(version)
        flavor_ref = command.flavor_ref
        if flavor_ref is not None:
            self.flavor(flavor_ref)
        volume_size = self._volume_size(command.volume_size)
        external = command.external
        restore_point = command.restore_point()
        backup_ref = command.backup_ref
        to_time = command.restore_time is not None
        if external is not None and restore_point:
            raise BadRequestError("An external instance cannot be restored from a backup.")
        if external is None:
            try:
                engine.check_request(command.engine_request())
            except InvalidRequestError as exc:
                raise BadRequestError(str(exc)) from exc

        now = self._clock.now()
        instance_id = InstanceId(str(uuid.uuid4()))
        sealed_connection = None
        public_connection = None
        identity = None
        if external is not None:
            try:
                connection = engine.register_external(external, project_id=ctx.project_id)
            except ExternalNotAllowedError as exc:
                raise ForbiddenError(str(exc)) from exc
            except InvalidExternalError as exc:
                raise BadRequestError(str(exc)) from exc
            sealed_connection = self._secrets.seal(connection, bound_to=instance_id)
            public_connection = engine.public_view(connection)
            identity = sha256_hex(engine.external_identity(connection).encode())

        with self._uow(write=True) as uow:
            # The project's instance usage row, locked first (before any read of this
            # transaction), so concurrent creates on PostgreSQL and MariaDB count one
            # after the other (SQLite's write lock already serialises them).
            uow.quotas.lock_in_use(ctx.project_id, INSTANCES)
            restore_time: str | None = None
            if to_time:
                backup_ref, _source, when = restore_base(uow, ctx, restore_point)
                restore_time = when.isoformat(timespec="microseconds")
            if backup_ref is not None:
                self._check_restore_point(uow, ctx, backup_ref, volume_size, version)
            if identity is not None:
                self._check_not_registered_elsewhere(uow, ctx, identity)
            in_use = uow.instances.count(ctx.project_id)
            limit = project_limit(uow.quotas, self._rules, ctx.project_id, INSTANCES)
            quotas.check_quota(resource=INSTANCES, in_use=in_use, limit=limit)
            host = self._place(uow, command.host)
            instance = Instance(
                id=instance_id,
                project_id=ctx.project_id,
                name=command.name,
                kind=InstanceKind.EXTERNAL if external is not None else InstanceKind.MANAGED,
                datastore_version_id=version.id,
                status=InstanceStatus.ACTIVE if external is not None else InstanceStatus.BUILD,
                created=now,
                updated=now,
                flavor_id=flavor_ref,
                volume_size=volume_size,
                task=None if external is not None else "BUILDING",
                restore_backup_id=BackupId(backup_ref) if backup_ref else None,
                public_connection=public_connection,
                host=host,
                external_identity=identity,
            )
            uow.instances.add(instance, sealed_connection)
            job = None
            if external is None:
                payload = command.job_payload()
                if restore_time is not None:
                    payload["restore_time"] = restore_time
                job = self._jobs.record(
                    uow,
                    JobKind.CREATE_INSTANCE,
                    instance_id,
                    {"sealed": self._secrets.seal(payload, bound_to=instance_id)},
                    route=instance.host,
                )
            uow.commit()
            view = InstanceView(instance, version, False)
        if job is not None:
            self._jobs.submit(job)
        return view

    @staticmethod
    def _check_not_registered_elsewhere(
        uow: UnitOfWork, ctx: RequestContext, identity: str
    ) -> None:
        """One project per external database: another project's live registration of the
        same database (whatever path or address reached it) refuses this one, without
        saying whose it is. The same project may register it again."""
        # Registrations of every project take one lock, so two cannot both pass the check
        # (SQLite's write lock already serialises them; PostgreSQL and MariaDB need a row).
        uow.quotas.lock_in_use(REGISTRATION_LOCK[0], REGISTRATION_LOCK[1])
        if any(i.project_id != ctx.project_id for i in uow.instances.holding_external(identity)):
            raise ForbiddenError("This database is already registered by another project.")

    def _place(self, uow: UnitOfWork, requested: str | None) -> str:
        """The worker host of a new instance: the one asked for (extension field ``host``),
        else the live worker host with the fewest instances, else the default host."""
        live = uow.workers.live(self._clock.now() - self._rules.worker_lease)
        if requested is not None:
            if requested not in live and requested != self._rules.default_host:
                raise BadRequestError(f"Host {requested!r} is not a live worker host.")
            return requested
        if not live:
            return self._rules.default_host
        counts = uow.instances.count_by_host()
        return min(live, key=lambda h: (counts.get(h, 0), h))

    def _resolve_version(self, ds_ref: str | None, version_ref: str | None) -> DatastoreVersion:
        ds = self._catalog.get(ds_ref) if ds_ref else self._catalog.default()
        if version_ref is None:
            if ds.default_version_id is None:
                raise BadRequestError(f"Datastore '{ds.name}' has no default version.")
            version = self._catalog.version_by_id(ds.default_version_id)
        else:
            version = self._catalog.version_in(ds, version_ref)
        if not version.active:
            raise BadRequestError(
                f"Datastore version '{version.name}' is not active on this service."
            )
        return version

    def _volume_size(self, size: int | None) -> int | None:
        if size is None:
            return None
        if size > self._rules.max_volume_size:
            raise OverLimitError(
                f"Volume 'size' cannot exceed maximum of {self._rules.max_volume_size} GB, "
                f"{size} cannot be accepted."
            )
        return size

    def _check_restore_point(
        self,
        uow: UnitOfWork,
        ctx: RequestContext,
        backup_id: str,
        volume_size: int | None,
        version: DatastoreVersion,
    ) -> None:
        backup = visible_backup(uow, ctx, backup_id)
        if backup.state not in RESTORABLE_STATES:
            raise ConflictError(
                f"Unable to create instance because backup {backup_id} is not completed. "
                f"Actual state: {backup.state}."
            )
        if volume_size is not None and backup.size_gb is not None and backup.size_gb > volume_size:
            raise ForbiddenError(
                "Backup is too large for given flavor or volume. "
                f"Backup size: {backup.size_gb} GBs. Available size: {volume_size} GBs."
            )
        if backup.location_ref is None:
            raise NotFoundError(
                f"Backup file in {backup.location_ref} was not found in the object storage."
            )
        source = self._catalog.find_version(backup.datastore_version_id)
        if source is None or source.datastore_name != version.datastore_name:
            source_name = source.datastore_name if source else "unknown"
            raise BadRequestError(
                f"The datastore from which the backup was taken, {source_name}, does not "
                f"match the destination datastore of {version.datastore_name}."
            )
        if source.name != version.name:
            # Physical backups restore into the same server version only.
            raise BadRequestError(
                f"The datastore version from which the backup was taken, {source.name}, "
                f"does not match the destination datastore version {version.name}."
            )

    # -- delete --------------------------------------------------------------------
    def delete(self, ctx: RequestContext, *, instance_id: str) -> None:
        with self._uow(write=True) as uow:
            instance = visible_instance(uow, ctx, instance_id)
            self._authz.enforce(ctx, "instance:delete", instance.project_id)
            if instance.status is InstanceStatus.BUILD or instance.task == "BUILDING":
                raise UnprocessableError(
                    f"Instance {instance_id} is not ready. (Status is {instance.status})."
                )
            if instance.task == "DELETING":
                return
            if uow.backups.running_for_instance(instance_id):
                raise UnprocessableError(
                    f"Instance {instance_id} is not currently available for an action to be "
                    "performed (instance status was BACKUP)."
                )
            instance.task = "DELETING"
            instance.updated = self._clock.now()
            uow.instances.save(instance)
            job = self._jobs.record(uow, JobKind.DELETE_INSTANCE, instance_id, route=instance.host)
            uow.commit()
        self._jobs.submit(job)
