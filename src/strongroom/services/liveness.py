"""The reaper: jobs whose worker died, and jobs whose queue message was lost.

Run periodically by every worker (scaled-out mode). Rows are claimed with
``SELECT … FOR UPDATE SKIP LOCKED``, so several reapers never handle the same job."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import attrs

from strongroom.domain.interruptions import AfterInterruption, after_interruption
from strongroom.domain.model import Job, JobKind, JobState
from strongroom.domain.ports import Clock, UnitOfWorkFactory
from strongroom.services.job_handlers import JobHandlers
from strongroom.services.jobs import JobDispatcher
from strongroom.services.leftovers import TemporaryObjectSweeper

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LivenessRules:
    job_lease: timedelta = timedelta(seconds=60)  # no heartbeat for this long: worker is dead
    redispatch_after: timedelta = timedelta(seconds=30)  # queued this long: send again
    dispatch_deadline: timedelta = timedelta(minutes=10)  # queued this long: give up
    sweep_interval: timedelta = timedelta(minutes=10)  # stale temporary objects: look again


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class Reaper:
    _uow: UnitOfWorkFactory
    _clock: Clock
    _handlers: JobHandlers
    _dispatcher: JobDispatcher
    _rules: LivenessRules
    _temporaries: TemporaryObjectSweeper | None = None
    _last_sweep: datetime | None = attrs.field(init=False, default=None)

    def beat(self, host_id: str) -> None:
        with self._uow(write=True) as uow:
            uow.workers.beat(host_id, self._clock.now())
            uow.commit()

    def reap(self) -> None:
        self._dead_workers()
        self._lost_messages()
        self._stale_temporaries()

    def _stale_temporaries(self) -> None:
        """Temporary objects killed writers left: listing stores costs more than a reap, so
        at most once per ``sweep_interval``."""
        now = self._clock.now()
        if self._temporaries is None or (
            self._last_sweep is not None and now - self._last_sweep < self._rules.sweep_interval
        ):
            return
        self._last_sweep = now
        self._temporaries.sweep()

    def _dead_workers(self) -> None:
        now = self._clock.now()
        with self._uow(write=True) as uow:
            dead = uow.jobs.stale(JobState.RUNNING, now - self._rules.job_lease)
            for job in dead:
                if after_interruption(job.kind) is AfterInterruption.RUN_AGAIN:
                    uow.jobs.requeue(job.id, now)
                else:
                    uow.jobs.set_state(job.id, JobState.FAILED, now, _stopped(job))
            uow.commit()
        for job in dead:
            if after_interruption(job.kind) is AfterInterruption.RUN_AGAIN:
                log.warning("re-queueing %s job %s: its worker died", job.kind, job.id)
                self._dispatcher.submit(job)
            else:
                log.warning("failing %s job %s: %s", job.kind, job.id, _stopped(job))
                # The dead worker's host may be another one: its files are not ours.
                on_this_host = job.worker == self._handlers.host_id
                self._handlers.abandon(job, _stopped(job), on_this_host=on_this_host)

    def _fail_instance(self, instance_id: str, reason: str) -> None:
        with self._uow() as uow:
            instance = uow.instances.find(instance_id)
        if instance is not None:
            self._handlers.instance_failed(instance, reason)

    def _lost_messages(self) -> None:
        now = self._clock.now()
        with self._uow(write=True) as uow:
            waiting = uow.jobs.stale(JobState.QUEUED, now - self._rules.redispatch_after)
            expired = [j for j in waiting if now - j.created > self._rules.dispatch_deadline]
            again = [j for j in waiting if j not in expired]
            for job in expired:
                uow.jobs.set_state(job.id, JobState.FAILED, now, "never picked up by a worker")
            for job in again:
                uow.jobs.touch(job.id, now)
            uow.commit()
        for job in expired:
            reason = f"no worker for host {job.route!r} picked the job up in time"
            if job.kind is JobKind.BACKUP:
                self._handlers.fail_backup(job.target_id, reason)
            elif job.kind is JobKind.CREATE_INSTANCE:
                self._fail_instance(job.target_id, reason)
        for job in again:
            log.info("dispatching job %s again (queued since %s)", job.id, job.created)
            self._dispatcher.submit(job)


def _stopped(job: Job) -> str:
    return f"the worker running it ({job.worker or 'unknown host'}) stopped responding"


__all__ = ["LivenessRules", "Reaper"]
