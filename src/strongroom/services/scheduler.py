"""The scheduler loop: start due runs, then act on finished ones (verify, retention).

Every process that serves the API runs one (never the workers). A due run is claimed in
the metadata database by a conditional UPDATE of ``next_run_at``, and a finished run by
clearing ``pending_backup_id`` the same way, so however many loops poll one database,
each tick starts one backup and each finished backup is handled once. A run is computed
from ``now``, so after downtime a schedule catches up with one run, not one per missed
tick; a run that cannot start records why and waits for its next tick."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import datetime, timedelta

import attrs

from strongroom.domain.errors import DomainError
from strongroom.domain.model import BackupState
from strongroom.domain.ports import Clock, UnitOfWorkFactory
from strongroom.domain.schedules import RunStatus, Schedule
from strongroom.services import cron
from strongroom.services.failure import describe_failure
from strongroom.services.job_history import JobHistory
from strongroom.services.periodic import Periodic
from strongroom.services.schedules import ScheduleService
from strongroom.services.telemetry import NO_TELEMETRY, Telemetry

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 1.0


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class Scheduler:
    _uow: UnitOfWorkFactory
    _clock: Clock
    _schedules: ScheduleService
    _verify: Callable[[str], object]
    _drill: Callable[[str], object] | None = None
    _interval: float = DEFAULT_INTERVAL
    _min_interval: int = cron.MIN_INTERVAL
    _telemetry: Telemetry = NO_TELEMETRY
    # The metadata's housekeeping rides on the same loop (where the scheduler runs: the
    # embedded service, and the API processes of a scaled-out one).
    _history: JobHistory | None = None
    _loop: Periodic = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._loop = Periodic(
            lambda: self.tick(),
            interval=self._interval,
            name="scheduler",
            log=log,
            failure="scheduler tick failed",
        )

    # -- one pass ------------------------------------------------------------------
    def tick(self) -> int:
        """Start every due run this process wins, then handle finished runs; returns the
        number of runs started."""
        started = 0
        now = self._clock.now()
        with self._uow() as uow:
            due = uow.schedules.due(now)
        for schedule in due:
            try:
                if not self._claim(schedule):
                    continue  # another process runs it
                ran = self._schedules.start_run(schedule) is not None
            except Exception:
                log.exception("scheduled run of %s failed to start", schedule.id)
                ran = False
            started += ran
            self._telemetry.schedule_run(outcome="started" if ran else "failed")
        self.follow_up()
        self.drills()
        if self._history is not None:
            self._history.purge()
        return started

    def _following(self, expression: str, zone: str, due: datetime) -> datetime:
        """When a run due at ``due`` fires next: the cron's first time after now, and at
        least ``min_interval`` after ``due`` (a cron stored before that was checked at
        create may name every second)."""
        earliest = due + timedelta(seconds=self._min_interval - 1)
        return cron.next_after(expression, zone, max(self._clock.now(), earliest))

    def _claim(self, schedule: Schedule) -> bool:
        following = self._following(schedule.cron, schedule.timezone, schedule.next_run_at)
        with self._uow(write=True) as uow:
            won = uow.schedules.claim(schedule.id, schedule.next_run_at, following)
            uow.commit()
        return won

    def follow_up(self) -> int:
        """For each schedule whose last backup has finished: record how it ended, verify it
        if asked, and apply the retention policy. Returns how many this process handled."""
        handled = 0
        with self._uow() as uow:
            waiting = [
                (s, uow.backups.find(s.pending_backup_id or ""))
                for s in uow.schedules.with_pending()
            ]
        for schedule, backup in waiting:
            if backup is not None and backup.is_running:
                continue
            if backup is None or backup.state is BackupState.DELETING:
                status, error = RunStatus.FAILED, "the backup was deleted before it finished"
            elif backup.state is BackupState.COMPLETED:
                status, error = RunStatus.COMPLETED, None
            else:
                status, error = RunStatus.FAILED, backup.fail_reason
            pending = schedule.pending_backup_id or ""
            with self._uow(write=True) as uow:
                won = uow.schedules.take_pending(schedule.id, pending, status, error)
                uow.commit()
            if not won:
                continue
            handled += 1
            if status is RunStatus.COMPLETED and schedule.verify:
                try:
                    self._verify(pending)
                except Exception:
                    log.exception("could not start the verification of backup %s", pending)
            if status is RunStatus.COMPLETED and schedule.copy_to is not None:
                try:
                    self._schedules.copy_run(schedule, pending)
                except Exception:
                    log.exception("could not start the copy of backup %s", pending)
            try:
                self._schedules.apply_retention(schedule)
                self._schedules.apply_copy_retention(schedule)
            except Exception:
                log.exception("retention of schedule %s failed", schedule.id)
        return handled

    def drills(self) -> int:
        """Start the restore drills that are due (``drill_cron``): each drills the
        schedule's newest completed backup, unless the project has a drill queued or
        running (skipped, recorded). Returns how many this process started."""
        if self._drill is None:
            return 0
        started = 0
        now = self._clock.now()
        with self._uow() as uow:
            due = uow.schedules.due_drills(now)
        for schedule in due:
            if schedule.drill_cron is None or schedule.next_drill_at is None:
                continue
            try:
                following = self._following(
                    schedule.drill_cron, schedule.timezone, schedule.next_drill_at
                )
                with self._uow(write=True) as uow:
                    won = uow.schedules.claim_drill(schedule.id, schedule.next_drill_at, following)
                    uow.commit()
                    completed = [
                        b
                        for b in uow.schedules.backups_of(schedule.id)
                        if b.state is BackupState.COMPLETED
                    ]
                if won and completed:
                    newest = max(completed, key=lambda b: b.created).id
                    try:
                        self._drill(newest)
                    except DomainError as exc:
                        self._drill_skipped(schedule, newest, now, exc)
                        continue
                    self._drill_recorded(schedule.id, newest, now, None)
                    started += 1
            except Exception:
                log.exception("restore drill of schedule %s failed to start", schedule.id)
        return started

    def _drill_skipped(
        self, schedule: Schedule, backup_id: str, now: datetime, exc: DomainError
    ) -> None:
        """Record on the schedule why its drill did not start (another drill of the
        project queued or running, ...), beside its backup runs' outcome; the next is at
        its time."""
        error = f"restore drill of backup {backup_id} skipped: {describe_failure(exc)}"
        log.warning("scheduled %s", error)
        self._drill_recorded(schedule.id, backup_id, now, error)

    def _drill_recorded(
        self, schedule_id: str, backup_id: str, now: datetime, error: str | None
    ) -> None:
        with self._uow(write=True) as uow:
            uow.schedules.record_drill(schedule_id, at=now, backup_id=backup_id, error=error)
            uow.commit()

    # -- the loop --------------------------------------------------------------------
    def start(self) -> None:
        if self._loop.start():
            # One line per start: with several serving processes, it says which one schedules.
            log.info("backup scheduler started in process %d", os.getpid())

    def stop(self) -> None:
        self._loop.stop()
