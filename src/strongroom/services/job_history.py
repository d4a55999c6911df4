"""Finished jobs are kept a while, then deleted.

A job row is written for every request that starts work, and a verification of a small
backup finishes in milliseconds: a project asking again and again would grow the metadata
database without end. A finished job is only looked at while someone follows it up (its
id is in the logs), so it is kept ``keep`` (``job_history_hours``) and then deleted, a
batch at a time, at most once every ``every``. Unfinished jobs are never touched."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import attrs

from strongroom.domain.ports import Clock, UnitOfWorkFactory

log = logging.getLogger(__name__)

BATCH = 5_000  # rows deleted in one transaction
DEFAULT_KEEP = timedelta(hours=24)
DEFAULT_EVERY = timedelta(minutes=10)


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class JobHistory:
    _uow: UnitOfWorkFactory
    _clock: Clock
    _keep: timedelta = DEFAULT_KEEP
    _every: timedelta = DEFAULT_EVERY
    _last: datetime | None = attrs.field(init=False, default=None)

    def purge(self) -> int:
        """Delete the finished jobs older than ``keep`` when the last purge is ``every``
        ago; returns how many went."""
        now = self._clock.now()
        if self._last is not None and now - self._last < self._every:
            return 0
        self._last = now
        removed = 0
        while True:
            with self._uow(write=True) as uow:
                batch = uow.jobs.purge_finished(now - self._keep, BATCH)
                uow.commit()
            removed += batch
            if batch < BATCH:
                break
        if removed:
            log.info("deleted %d finished jobs older than %s", removed, self._keep)
        return removed
