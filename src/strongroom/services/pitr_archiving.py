"""The archiver: on the host that runs each instance, every ``interval`` seconds, the log
written since the last batch goes to the instance's store (``wal_archive``) and its row to
the catalog, then the policy moves on to the batch's end. The slot keeps what is not yet
stored, so a restart resumes from ``next_start`` without a gap; when the server no longer
has that WAL (the slot was lost), archiving starts a new run and the window shows the gap.
``enabled: false`` drops the slot; the batches stay until retention removes them.

A pass visits the host's instances one after another; an engine bounds each batch's time
(a tenant's server that trickles its log holds the others up that long, then its batch
fails) and size (a busy server's log then comes in several batches, taken one after
another within ``CATCH_UP_SECONDS``), and each pass starts one instance further on, so that
one slow instance does not always come before the same others."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import attrs

from strongroom.domain.pitr import PitrPolicy, WalBatch
from strongroom.domain.ports import BackupQuery, Clock, UnitOfWorkFactory
from strongroom.engines.base import NOT_COVERED, PointInTimeEngine
from strongroom.services.datastores import DatastoreCatalog
from strongroom.services.periodic import Periodic
from strongroom.services.secrets_box import SecretBox
from strongroom.services.wal_archive import WalArchive

log = logging.getLogger(__name__)
DEFAULT_INTERVAL = 10.0  # seconds between batches: RPO under a minute with room to spare
# Seconds one instance's batches may take in a pass while each stops short of its log's
# end (a busy server): it catches up in one pass, the others wait at most this long.
CATCH_UP_SECONDS = 120.0


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class PitrArchiver:
    _uow: UnitOfWorkFactory
    _clock: Clock
    _catalog: DatastoreCatalog
    _secrets: SecretBox
    _archive: WalArchive
    _host: str = attrs.field(alias="host_id")
    _interval: float = DEFAULT_INTERVAL
    _catch_up_seconds: float = CATCH_UP_SECONDS
    _loop: Periodic = attrs.field(init=False)
    # One pass at a time (the loop, or a test's tick).
    _pass: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _turn: int = attrs.field(init=False, default=0)  # where the next pass starts

    def __attrs_post_init__(self) -> None:
        self._loop = Periodic(
            lambda: self.tick(),
            interval=self._interval,
            name="pitr-archiver",
            log=log,
            failure="archiver pass failed",
        )

    def tick(self) -> int:
        """One pass over this host's instances; returns the batches stored."""
        with self._pass:
            return self._tick()

    def _tick(self) -> int:
        with self._uow() as uow:
            policies = sorted(uow.pitr.policies(), key=lambda p: p.instance_id)
        if policies:
            first = self._turn % len(policies)
            self._turn += 1
            policies = policies[first:] + policies[:first]
        stored = 0
        for policy in policies:
            try:
                stored += self._catch_up(policy)
            except Exception as exc:
                log.warning("archiving instance %s failed: %s", policy.instance_id, exc)
                self._record_error(policy.instance_id, str(exc)[:1000])
        return stored

    def _catch_up(self, policy: PitrPolicy) -> int:
        """Batches of the instance while each stopped short of its log's end (a busy
        server writes more in a pass than one batch takes), for at most
        ``catch_up_seconds``: the others' turn comes after that."""
        began = time.monotonic()
        stored = 0
        current: PitrPolicy | None = policy
        while current is not None:
            count, more = self._archive_once(current)
            stored += count
            if not more or time.monotonic() - began >= self._catch_up_seconds:
                break
            with self._uow() as uow:
                current = uow.pitr.policy(policy.instance_id)
        return stored

    def archive_instance(self, policy: PitrPolicy) -> int:
        """One batch of the instance, if it is archived here and now; how many were stored."""
        return self._archive_once(policy)[0]

    def _archive_once(self, policy: PitrPolicy) -> tuple[int, bool]:
        """``(batches stored, whether more of the log waits)``."""
        with self._uow() as uow:
            instance = uow.instances.find(policy.instance_id)
            sealed = uow.instances.sealed_connection(policy.instance_id)
        if instance is None:
            # The instance is gone (its server and slot with it); its backups may stay,
            # and the archive with them until they go too.
            self.prune(policy.instance_id, keep_newest=False)
            with self._uow(write=True) as uow:
                if not uow.pitr.batches(policy.instance_id):
                    uow.pitr.remove_policy(policy.instance_id)
                    uow.commit()
            return 0, False
        if sealed is None or instance.host != self._host:
            return 0, False
        if instance.status.value not in ("ACTIVE", "BACKUP") or instance.task:
            return 0, False
        self.prune(policy.instance_id, keep_newest=policy.enabled)
        version = self._catalog.version_by_id(instance.datastore_version_id)
        engine = self._catalog.engine_for(version)
        if not isinstance(engine, PointInTimeEngine):
            return 0, False
        connection = self._secrets.open(sealed, bound_to=instance.id)
        if not policy.enabled:
            if policy.next_start is not None:
                engine.stop_archiving(connection)
                self._save(replace(policy, next_start=None, started_at=None, last_error=None))
            return 0, False
        if policy.next_start is None:
            start = engine.start_archiving(connection)
            policy = replace(policy, next_start=start, started_at=self._clock.now())
            self._save(policy)
        assert policy.next_start is not None and policy.started_at is not None
        with self._uow() as uow:
            batches = uow.pitr.batches(policy.instance_id)
        previous = next((b for b in reversed(batches) if b.stop == policy.next_start), None)
        try:
            stored = self._archive.store_batch(
                engine=engine,
                connection=connection,
                project_id=instance.project_id,
                instance_id=instance.id,
                datastore=version.datastore_name,
                store_name=policy.store_name,
                container=policy.container,
                start=policy.next_start,
            )
        except Exception as exc:
            if "the archive has a gap" in str(exc):
                # The server no longer has the WAL from next_start: a new run begins.
                engine.start_archiving(connection)
                self._save(replace(policy, next_start=None, started_at=None, last_error=str(exc)))
            raise
        archived_from = previous.archived_through if previous else policy.started_at
        batch = WalBatch(
            stored.batch_id,
            instance.project_id,
            instance.id,
            stored.store_name,
            stored.container,
            stored.start,
            stored.stop,
            archived_from,
            # An engine may report less than the batch before it (MariaDB: a statement
            # running long holds it back); what was covered stays covered.
            max(stored.archived_through, archived_from),
            self._clock.now(),
        )
        with self._uow(write=True) as uow:
            current = uow.pitr.policy(policy.instance_id)
            uow.pitr.add_batch(batch)
            if current is not None and current.next_start == policy.next_start:
                current.next_start = stored.stop
                current.last_error = None
                uow.pitr.save_policy(current)
            uow.commit()
        return 1, stored.archived_through <= NOT_COVERED

    def prune(self, instance_id: str, *, keep_newest: bool = True) -> int:
        """Retention: keep the archive back to the oldest backup the instance still has
        (schedules' retention decides which those are), no further. While archiving is on
        the newest batch stays, so the next one knows where its run's coverage begins;
        once it is off and no backup is left, the whole archive goes."""
        with self._uow() as uow:
            batches = uow.pitr.batches(instance_id)
            backups = uow.backups.query(BackupQuery(instance_id=instance_id))
        if not batches:
            self._sweep(instance_id, [])
            return 0
        # Compared on one clock, this host's: when a batch was stored, and when the backup
        # began here (its job runs on the instance's host too). A server's clock, which may
        # be an external server's and behind, never decides what is removed. A batch stored
        # before the oldest backup began holds only log from before it.
        oldest = min((b.progress.started_at or b.created for b in backups), default=None)
        newest = max(batches, key=lambda b: (b.created, b.start))
        stale = [
            b
            for b in batches
            if not (keep_newest and b is newest) and (oldest is None or b.created < oldest)
        ]
        for batch in stale:
            # The row goes first: a batch the catalog lists always has its objects.
            with self._uow(write=True) as uow:
                uow.pitr.remove_batches([batch.id])
                uow.commit()
            self._archive.remove(batch.store_name, batch.container, instance_id, batch.id)
        self._sweep(instance_id, [b for b in batches if b not in stale])
        return len(stale)

    def _sweep(self, instance_id: str, kept: list[WalBatch]) -> None:
        """Objects of batches the catalog does not list: a pass killed while writing, or
        a removal that failed half-way. No batch of this instance is being written now
        (one pass at a time, on the instance's host), so they are leftovers."""
        with self._uow() as uow:
            policy = uow.pitr.policy(instance_id)
        places = {(b.store_name, b.container) for b in kept}
        if policy is not None:
            places.add((policy.store_name, policy.container))
        known = {b.id for b in kept}
        for store_name, container in places:
            for batch_id in self._archive.stored_batch_ids(store_name, container, instance_id):
                if batch_id not in known:
                    self._archive.remove(store_name, container, instance_id, batch_id)

    def _save(self, policy: PitrPolicy) -> None:
        with self._uow(write=True) as uow:
            current = uow.pitr.policy(policy.instance_id)
            if current is not None:
                current.next_start = policy.next_start
                current.started_at = policy.started_at
                current.last_error = policy.last_error
                uow.pitr.save_policy(current)
                uow.commit()

    def _record_error(self, instance_id: str, error: str) -> None:
        with self._uow(write=True) as uow:
            current = uow.pitr.policy(instance_id)
            if current is not None:
                current.last_error = error
                uow.pitr.save_policy(current)
                uow.commit()

    # -- the loop --------------------------------------------------------------------
    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
