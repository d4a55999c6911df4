"""Job handlers: each reloads its target by id and is safe to run again."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs

from strongroom.domain import states
from strongroom.domain.interruptions import AfterInterruption, after_interruption
from strongroom.domain.model import (
    Backup,
    BackupState,
    Instance,
    InstanceKind,
    InstanceStatus,
    Job,
    JobId,
    JobKind,
    JobState,
)
from strongroom.domain.ports import Clock, UnitOfWorkFactory
from strongroom.engines.base import Engine, InstanceRequest
from strongroom.engines.identity import remove_tree
from strongroom.services.copy_jobs import CopyJobs
from strongroom.services.datastores import DatastoreCatalog
from strongroom.services.failure import describe_failure
from strongroom.services.instance_requests import instance_request
from strongroom.services.secrets_box import SecretBox
from strongroom.services.telemetry import NO_TELEMETRY, Telemetry
from strongroom.services.transfer import Transfer
from strongroom.services.wal_archive import WalArchive, batches_for

log = logging.getLogger(__name__)

GB = 1024**3
STOPPED_WHILE = {
    JobKind.BACKUP: "the service stopped while the backup was running",
    JobKind.CREATE_INSTANCE: "the service stopped while the instance was being built",
    JobKind.DELETE_BACKUP: "the service stopped while the backup was being deleted",
    JobKind.DELETE_INSTANCE: "the service stopped while the instance was being deleted",
}


def about(backup: Backup) -> dict[str, Any]:
    """The ids a log line about ``backup`` carries (see strongroom.logformat)."""
    return {
        "project_id": backup.project_id,
        "instance_id": backup.instance_id,
        "backup_id": backup.id,
    }


def about_instance(instance: Instance) -> dict[str, Any]:
    return {
        "project_id": instance.project_id,
        "instance_id": instance.id,
        "backup_id": instance.restore_backup_id,
    }


def size_in_gb(size: int | None) -> float:
    if not size:
        return 0.0
    return max(0.01, round(size / GB, 2))


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class JobHandlers:
    _uow: UnitOfWorkFactory
    _clock: Clock
    _catalog: DatastoreCatalog
    _transfer: Transfer
    _secrets: SecretBox
    _instances_dir: Path
    host_id: str = "local"
    _heartbeat_interval: float = 10.0
    _telemetry: Telemetry = NO_TELEMETRY
    _more: dict[JobKind, Callable[[str, dict[str, Any]], None]] = attrs.field(
        init=False, factory=dict
    )
    _copies: CopyJobs | None = attrs.field(init=False, default=None)

    def add_handler(self, kind: JobKind, handler: Callable[[str, dict[str, Any]], None]) -> None:
        """A job kind handled outside this module (e.g. verification)."""
        self._more[kind] = handler

    def use_copies(self, copies: CopyJobs) -> None:
        """Copies in other stores: removed with their backup, and a restore's fallback."""
        self._copies = copies
        self._more[JobKind.COPY_BACKUP] = copies.copy
        self._more[JobKind.DELETE_COPY] = copies.delete

    def home_of(self, instance_id: str) -> Path:
        return self._instances_dir / instance_id

    # -- dispatch ------------------------------------------------------------------
    def run(self, job_id: JobId) -> None:
        """Run a job once: a second delivery of the same message finds it claimed."""
        with self._uow(write=True) as uow:
            job = uow.jobs.claim(job_id, self.host_id, self._clock.now())
            uow.commit()
        if job is None:
            return
        handler = {
            JobKind.BACKUP: self._backup,
            JobKind.DELETE_BACKUP: self._delete_backup,
            JobKind.CREATE_INSTANCE: self._create_instance,
            JobKind.DELETE_INSTANCE: self._delete_instance,
        }.get(job.kind) or self._more[job.kind]
        stop_beating = threading.Event()
        beater = threading.Thread(
            target=self._beat,
            args=(job_id, stop_beating),
            name=f"heartbeat-{job_id[:8]}",
            daemon=True,
        )
        beater.start()
        self._telemetry.job_started(kind=job.kind.value)
        try:
            handler(job.target_id, job.payload)
        except Exception as exc:
            log.exception("%s job for %s failed", job.kind, job.target_id, extra={"job_id": job_id})
            self.finish(job_id, JobState.FAILED, describe_failure(exc))
        else:
            self.finish(job_id, JobState.DONE, None)
        finally:
            self._telemetry.job_ended(kind=job.kind.value)
            stop_beating.set()
            beater.join()

    def _beat(self, job_id: JobId, stop: threading.Event) -> None:
        """Tell the reaper this job's worker is alive while the job runs."""
        while not stop.wait(self._heartbeat_interval):
            try:
                with self._uow(write=True) as uow:
                    uow.jobs.beat(job_id, self._clock.now())
                    uow.commit()
            except Exception as exc:
                log.warning("heartbeat of job %s failed: %s", job_id, exc)

    def finish(self, job_id: JobId, state: JobState, error: str | None) -> None:
        with self._uow(write=True) as uow:
            uow.jobs.set_state(job_id, state, self._clock.now(), error)
            uow.commit()

    # -- backups -------------------------------------------------------------------
    def _find_backup(self, backup_id: str) -> Backup | None:
        with self._uow() as uow:
            return uow.backups.find(backup_id)

    def _backup(self, backup_id: str, _payload: dict[str, Any]) -> None:
        with self._uow() as uow:
            backup = uow.backups.find(backup_id)
            if backup is None or backup.state is not BackupState.NEW:
                return
            instance = uow.instances.find(backup.instance_id or "")
            sealed = uow.instances.sealed_connection(backup.instance_id or "")
            parent = uow.backups.find(backup.parent_id) if backup.parent_id else None
        started = time.monotonic()
        datastore = "unknown"
        try:
            if instance is None or sealed is None:
                raise RuntimeError("the instance of this backup no longer exists")
            if backup.parent_id and (parent is None or parent.state is not BackupState.COMPLETED):
                raise RuntimeError(f"parent backup {backup.parent_id} is no longer available")
            version = self._catalog.version_by_id(instance.datastore_version_id)
            datastore = version.datastore_name
            engine = self._catalog.engine_for(version)
            connection = self._secrets.open(sealed, bound_to=instance.id)
            expected = engine.data_size(connection)
            # BUILDING with its size and expected bytes in one step: a reader never sees a
            # running backup without them.
            with self._uow(write=True) as uow:
                claimed = uow.backups.find_for_update(backup_id)
                if claimed is None or claimed.state is not BackupState.NEW:
                    return
                states.transition(claimed, BackupState.BUILDING, self._clock.now())
                claimed.size_gb = size_in_gb(expected)
                claimed.progress.bytes_expected = expected
                claimed.progress.started_at = self._clock.now()
                uow.backups.save(claimed)
                uow.commit()
            outcome = self._transfer.backup(
                backup=claimed,
                engine=engine,
                connection=connection,
                datastore=version.datastore_name,
                datastore_version=version.name,
                parent=parent,
                report=lambda done: self._report(backup_id, done),
                find_backup=self._find_backup,
            )
        except Exception as exc:
            self.fail_backup(backup_id, describe_failure(exc))
            self._backup_finished(datastore, "failed", started)
            raise
        with self._uow(write=True) as uow:
            done = uow.backups.find_for_update(backup_id)
            if done is None:
                return
            # Raises if the backup was failed meanwhile (e.g. by the reaper): it stays FAILED.
            states.transition(done, BackupState.COMPLETED, self._clock.now())
            done.location_ref = outcome.location_ref
            done.stored_bytes = outcome.stored_bytes
            done.progress.bytes_done = outcome.plain_bytes
            done.progress.updated_at = self._clock.now()
            uow.backups.save(done)
            uow.commit()
        self._backup_finished(
            datastore, "completed", started, read=outcome.plain_bytes, stored=outcome.stored_bytes
        )
        log.info("backup completed (%d bytes stored)", outcome.stored_bytes, extra=about(done))

    def _backup_finished(
        self, datastore: str, outcome: str, started: float, *, read: int = 0, stored: int = 0
    ) -> None:
        self._telemetry.backup_finished(
            datastore=datastore,
            outcome=outcome,
            seconds=time.monotonic() - started,
            read=read,
            stored=stored,
        )

    def _report(self, backup_id: str, done: int) -> None:
        with self._uow(write=True) as uow:
            uow.backups.update_progress(backup_id, done, self._clock.now())
            uow.commit()

    def fail_backup(self, backup_id: str, reason: str) -> None:
        """A running backup ends FAILED with ``reason`` (a finished one is left alone)."""
        self._record_failure(backup_id, BackupState.FAILED, reason, running_only=True)

    def _record_failure(
        self, backup_id: str, state: BackupState, reason: str, *, running_only: bool
    ) -> None:
        with self._uow(write=True) as uow:
            backup = uow.backups.find_for_update(backup_id)
            if backup is None or (running_only and not backup.is_running):
                return
            states.transition(backup, state, self._clock.now())
            backup.fail_reason = reason
            uow.backups.save(backup)
            uow.commit()
        log.warning("backup %s: %s", state.value, reason, extra=about(backup))

    def _delete_backup(self, backup_id: str, payload: dict[str, Any]) -> None:
        with self._uow() as uow:
            backup = uow.backups.find(backup_id)
        if backup is None:
            return
        if not payload.get("keep_objects"):
            try:
                self._transfer.remove_objects(backup)
                if self._copies is not None:
                    self._copies.remove_copies(backup)
            except Exception as exc:
                self._record_failure(
                    backup.id, BackupState.DELETE_FAILED, describe_failure(exc), running_only=False
                )
                raise
        with self._uow(write=True) as uow:
            uow.backups.remove(backup_id)
            uow.commit()
        log.info("backup deleted", extra=about(backup))

    # -- instances -----------------------------------------------------------------
    def _create_instance(self, instance_id: str, payload: dict[str, Any]) -> None:
        with self._uow() as uow:
            instance = uow.instances.find(instance_id)
        if instance is None or instance.status is not InstanceStatus.BUILD:
            return
        home = self.home_of(instance_id)
        if "sealed" in payload:  # the request's users carry passwords
            payload = self._secrets.open(payload["sealed"], bound_to=instance_id)
        request = instance_request(instance.name, payload)
        started = time.monotonic()
        datastore = "unknown"
        note: str | None = None
        try:
            version = self._catalog.version_by_id(instance.datastore_version_id)
            datastore = version.datastore_name
            engine = self._catalog.engine_for(version)
            if instance.restore_backup_id:
                try:
                    connection, note = self._restore(
                        instance, engine, home, request, payload.get("restore_time")
                    )
                except Exception:
                    self._restore_finished(datastore, "failed", started)
                    raise
                self._restore_finished(datastore, "completed", started)
            else:
                home.mkdir(parents=True, exist_ok=True)
                connection = engine.create_instance(home, request)
        except Exception as exc:
            with contextlib.suppress(OSError):  # never through a link the tenant left
                remove_tree(home)
            self.instance_failed(instance, describe_failure(exc))
            raise
        with self._uow(write=True) as uow:
            current = uow.instances.find(instance_id)
            if current is None:
                return
            current.status = InstanceStatus.ACTIVE
            current.task = None
            current.updated = self._clock.now()
            current.public_connection = engine.public_view(connection)
            if note is not None:  # restored from a copy: the instance's fault says why
                current.fault = note
            uow.instances.save(current, self._secrets.seal(connection, bound_to=instance_id))
            uow.commit()
        if instance.restore_backup_id:
            log.info("instance restored from its backup", extra=about_instance(instance))
        else:
            log.info("instance created", extra=about_instance(instance))

    def _restore(
        self,
        instance: Instance,
        engine: Engine,
        home: Path,
        request: InstanceRequest,
        restore_time: str | None = None,
    ) -> tuple[dict[str, Any], str | None]:
        with self._uow() as uow:
            target = uow.backups.find(instance.restore_backup_id or "")
        if target is None:
            raise RuntimeError(f"backup {instance.restore_backup_id} no longer exists")

        find = self._find_backup
        if restore_time is not None:
            when = datetime.fromisoformat(restore_time)
            with self._uow() as uow:
                batches = uow.pitr.batches(target.instance_id or "")
            archive = WalArchive(self._transfer)
            # The archive is in the instance's own store: no fallback to a copy here.
            connection = self._transfer.restore(
                target=target,
                find_backup=find,
                engine=engine,
                home=home,
                request=request,
                archive=lambda: archive.open_batches(batches_for(batches, target.created, when)),
                target_time=when,
            )
            return connection, None
        if self._copies is None:
            connection = self._transfer.restore(
                target=target, find_backup=find, engine=engine, home=home, request=request
            )
            return connection, None
        restored, note = self._copies.restore(
            target=target,
            find_backup=find,
            engine=engine,
            home=home,
            request=request,
            discard=lambda: self._discard_home(instance),
        )
        return dict(restored), note

    def _restore_finished(self, datastore: str, outcome: str, started: float) -> None:
        seconds = time.monotonic() - started
        self._telemetry.restore_finished(datastore=datastore, outcome=outcome, seconds=seconds)

    def _discard_home(self, instance: Instance) -> None:
        """An interrupted build may have started a server: stop it before removing its
        files (best effort: the build never recorded a connection)."""
        home = self.home_of(instance.id)
        with contextlib.suppress(Exception):
            version = self._catalog.version_by_id(instance.datastore_version_id)
            self._catalog.engine_for(version).destroy_instance(home, {"managed": True})
        with contextlib.suppress(OSError):  # never through a link the tenant left
            remove_tree(home)

    def instance_failed(self, instance: Instance, reason: str) -> None:
        with self._uow(write=True) as uow:
            current = uow.instances.find(instance.id)
            if current is None:
                return
            current.status = InstanceStatus.ERROR
            current.task = None
            current.fault = reason
            current.updated = self._clock.now()
            uow.instances.save(current)
            uow.commit()
        log.warning("instance build failed: %s", reason, extra=about_instance(instance))

    def _delete_instance(self, instance_id: str, _payload: dict[str, Any]) -> None:
        with self._uow() as uow:
            instance = uow.instances.find(instance_id)
            sealed = uow.instances.sealed_connection(instance_id)
        if instance is None:
            return
        home = self.home_of(instance_id)
        if sealed is not None:
            # Managed: stop and remove the server. External: release what the service holds
            # on that server (e.g. a replication slot); its data is never touched.
            version = self._catalog.version_by_id(instance.datastore_version_id)
            engine = self._catalog.engine_for(version)
            engine.destroy_instance(home, self._secrets.open(sealed, bound_to=instance_id))
        if instance.kind is InstanceKind.MANAGED:
            with contextlib.suppress(OSError):  # never through a link the tenant left
                remove_tree(home)
        with self._uow(write=True) as uow:
            uow.instances.mark_deleted(instance_id)
            uow.commit()

    # -- restart safety ------------------------------------------------------------
    def recover(self) -> list[Job]:
        """Embedded mode, after a restart: settle what was interrupted, return the jobs to
        run again. (Scaled out, the reaper does this by heartbeats instead.)"""
        resubmit: list[Job] = []
        with self._uow() as uow:
            unfinished = uow.jobs.unfinished()
        for job in unfinished:
            if job.state is not JobState.RUNNING:
                resubmit.append(job)  # queued: never started
            elif after_interruption(job.kind) is AfterInterruption.RUN_AGAIN:
                with self._uow(write=True) as uow:
                    uow.jobs.requeue(job.id, self._clock.now())
                    uow.commit()
                resubmit.append(job)
            else:
                self.abandon(job, STOPPED_WHILE[job.kind], on_this_host=True)
                self.finish(job.id, JobState.FAILED, "interrupted by a service restart")
        # A running backup with no job left (it cannot happen through the service, but a
        # hand-edited database must not leave one BUILDING forever).
        with self._uow() as uow:
            running = uow.backups.in_states(
                [BackupState.NEW, BackupState.BUILDING, BackupState.SAVING]
            )
            pending = {j.target_id for j in resubmit}
        for backup in running:
            if backup.id not in pending:
                self.fail_backup(backup.id, "the service stopped while the backup was running")
        return resubmit

    def abandon(self, job: Job, reason: str, *, on_this_host: bool) -> None:
        """The target of a job that failed by interruption (see ``after_interruption``):
        a backup ends FAILED and its partial objects are removed; an instance ends ERROR,
        and its half-built home is removed when it is on this host."""
        if job.kind is JobKind.BACKUP:
            self.fail_backup(job.target_id, reason)
            self.remove_partial(job.target_id)
        elif job.kind is JobKind.CREATE_INSTANCE:
            with self._uow() as uow:
                instance = uow.instances.find(job.target_id)
            if instance is not None:
                if on_this_host:
                    self._discard_home(instance)
                self.instance_failed(instance, reason)

    def remove_partial(self, backup_id: str) -> None:
        with self._uow() as uow:
            backup = uow.backups.find(backup_id)
        if backup is not None:
            self._transfer.discard_objects(backup)

    def start_managed_instances(self) -> None:
        """Bring managed servers back after a restart; one that cannot start goes to ERROR."""
        with self._uow() as uow:
            instances = [
                i
                for i in uow.instances.all_live()
                if i.kind is InstanceKind.MANAGED
                and i.status is InstanceStatus.ACTIVE
                and i.host == self.host_id
            ]
            sealed = {i.id: uow.instances.sealed_connection(i.id) for i in instances}
        for instance in instances:
            blob = sealed.get(instance.id)
            if blob is None:
                continue
            try:
                version = self._catalog.version_by_id(instance.datastore_version_id)
                engine = self._catalog.engine_for(version)
                connection = self._secrets.open(blob, bound_to=instance.id)
                started = engine.start_instance(self.home_of(instance.id), connection)
            except Exception as exc:
                self.instance_failed(instance, describe_failure(exc))
                continue
            if started != connection:
                with self._uow(write=True) as uow:
                    current = uow.instances.find(instance.id)
                    if current is not None:
                        current.public_connection = engine.public_view(started)
                        uow.instances.save(
                            current, self._secrets.seal(started, bound_to=instance.id)
                        )
                        uow.commit()
