"""Restore drills: restore a backup into a throwaway managed instance, check what came
back, and throw the instance away.

A drill proves more than a verification: the engine rebuilds the database from the chain
(its own restore checks included), then runs its consistency checks on what came back
and counts each table's rows (``Engine.check_restored``: SQLite's ``integrity_check``,
PostgreSQL's ``pg_amcheck``, MariaDB's ``CHECK TABLE … EXTENDED``). The report holds the
checks passed, the number of tables and the first tables' row counts, and, when a count
was too slow and skipped, how many were (``skipped``) and why (``skipped_tables``).

The instance lives under the service's own ``instances`` directory as ``drill-<random>``:
it is not a row of the project's instances, so it counts against no quota and appears in
no listing, and it is removed, OS user and all, whatever the outcome. The drill runs as a
job like a backup; the project's requests never wait for it.

A drill holds one of the workers every project shares, so it has a budget
(``drill_timeout``): the restore gets all of it (the engine's own waits and the reading
of the backup end with it), the checks what the restore left, and a drill that runs out
of it fails, saying so. A project has at most one drill queued or running, a schedule's
included (``scheduled``)."""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs

from strongroom.domain.model import (
    Backup,
    BackupState,
    Drill,
    DrillStatus,
    JobKind,
)
from strongroom.domain.ports import UnitOfWork
from strongroom.engines.base import Engine, InstanceRequest
from strongroom.engines.identity import remove_tree
from strongroom.services import drill_homes
from strongroom.services.backup_checks import BackupCheckJob, BackupCheckRequests
from strongroom.services.datastores import DatastoreCatalog
from strongroom.services.failure import describe_failure

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 1800.0  # seconds a drill may take, restore and checks (drill_timeout)


class DrillTimeoutError(Exception):
    """The drill did not finish within its budget."""


class DrillService(BackupCheckRequests):
    """Asks for a drill: records RUNNING and a job in one transaction."""

    rule = "backup:drill"
    kind = JobKind.DRILL_BACKUP
    done = "drilled"
    states = (BackupState.COMPLETED,)

    def last(self, backup: Backup) -> Drill | None:
        return backup.drill

    def record_running(self, uow: UnitOfWork, backup: Backup, now: datetime) -> None:
        backup.drill = Drill(DrillStatus.RUNNING, now)
        uow.backups.record_drill(backup.id, backup.drill)

    def scheduled(self, backup_id: str) -> Backup:
        """A schedule's drill, refused as a request's is while the project has one queued
        or running: each holds a shared worker for up to its whole budget."""
        return self.start(backup_id, per_project=self._per_project)


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class Driller(BackupCheckJob):
    """The ``drill_backup`` job."""

    _catalog: DatastoreCatalog
    _instances_dir: Path
    _timeout: float = DEFAULT_TIMEOUT

    def __call__(self, backup_id: str, _payload: dict[str, Any]) -> None:
        backup = self._live(backup_id)
        if backup is None:
            return
        try:
            report = self.drill(backup)
        except Exception as exc:
            log.warning("restore drill of backup %s failed: %s", backup_id, exc)
            drill = Drill(DrillStatus.FAILED, self._clock.now(), describe_failure(exc))
        else:
            drill = Drill(DrillStatus.OK, self._clock.now(), None, report)
        with self._uow(write=True) as uow:
            uow.backups.record_drill(backup_id, drill)
            uow.commit()

    def drill(self, backup: Backup) -> dict[str, Any]:
        deadline = time.monotonic() + self._timeout
        version = self._catalog.version_by_id(backup.datastore_version_id or "")
        engine = self._catalog.engine_for(version)
        links = self._open_chain(backup)
        for link in links:
            engine.check_restorable(link.opened.manifest.engine)
        drill_homes.sweep(self._instances_dir, self._engine_of_version)
        with drill_homes.new_home(self._instances_dir, version.id) as home:
            connection: dict[str, Any] | None = None
            try:
                connection = dict(
                    engine.restore_instance(
                        home,
                        self._transfer.restore_inputs(links),
                        InstanceRequest("drill"),
                        timeout=self._left(deadline, "before the restore"),
                    )
                )
                report: dict[str, Any] = {"restored_links": len(links)}
                left = self._left(deadline, "once the backup was restored")
                report.update(engine.check_restored(home, connection, timeout=left))
                self._left(deadline, "once the restored data was checked")
                return report
            except DrillTimeoutError:
                raise
            except Exception as exc:
                if time.monotonic() < deadline:
                    raise
                # Whatever broke off when the budget ran out, that is the reason.
                raise DrillTimeoutError(self._over(describe_failure(exc))) from exc
            finally:
                try:
                    engine.destroy_instance(home, connection or {"managed": True})
                except Exception as exc:
                    log.warning("drill instance %s not stopped cleanly: %s", home.name, exc)
                with contextlib.suppress(OSError):  # never through a link the tenant left
                    remove_tree(home)

    def _left(self, deadline: float, when: str) -> float:
        """Seconds left of the budget; raises DrillTimeoutError when none are."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise DrillTimeoutError(self._over(f"no time was left {when}"))
        return left

    def _over(self, detail: str) -> str:
        return f"the restore drill did not finish within {self._timeout:g} s ({detail})"

    def _engine_of_version(self, version_id: str) -> Engine:
        return self._catalog.engine_for(self._catalog.version_by_id(version_id))
