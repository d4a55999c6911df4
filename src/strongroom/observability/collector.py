"""MetadataCollector: series read from the metadata database at scrape time, so every
process (and every API worker) reports the same service-wide values without sharing
state: backups by state, each instance's last success, jobs, live workers.

Project ids appear as labels (with instance ids) on the last-success series only: an
operator needs to know whose instance went without a backup, and ids are what the API
itself shows in URLs. Names, descriptions, hosts and connection details never appear."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from strongroom.domain.statistics import ServiceStatistics, StatisticsSource

log = logging.getLogger(__name__)


def _seconds(at: datetime) -> float:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


class MetadataCollector(Collector):
    """``now`` is the service clock's (naive UTC, as the metadata stores times)."""

    def __init__(
        self,
        source: StatisticsSource,
        *,
        worker_alive_for: timedelta,
        now: Callable[[], datetime],
    ) -> None:
        self._source = source
        self._alive_for = worker_alive_for
        self._now = now
        self._lock = threading.Lock()  # concurrent scrapes take turns: one read at a time

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # read at scrape time only (no query when the collector is registered)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "strongroom_metadata_up", "1 when the metadata database answered this scrape."
        )
        try:
            with self._lock:
                stats = self._source.read(live_since=self._now() - self._alive_for)
        except Exception as exc:
            log.warning("metrics: the metadata database did not answer: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self._families(stats)

    @staticmethod
    def _families(stats: ServiceStatistics) -> Iterator[GaugeMetricFamily]:
        backups = GaugeMetricFamily(
            "strongroom_backups",
            "Backups in the metadata, by state and datastore.",
            labels=["state", "datastore"],
        )
        for (state, datastore), count in sorted(stats.backups.items()):
            backups.add_metric([state, datastore], count)
        yield backups
        last = GaugeMetricFamily(
            "strongroom_last_successful_backup_timestamp_seconds",
            "When each live instance's newest COMPLETED backup finished (Unix time).",
            labels=["instance_id", "project_id"],
        )
        for success in stats.last_success:
            last.add_metric([success.instance_id, success.project_id], _seconds(success.at))
        yield last
        yield GaugeMetricFamily(
            "strongroom_jobs_running",
            "Jobs claimed by a worker and not finished.",
            value=stats.jobs_running,
        )
        yield GaugeMetricFamily(
            "strongroom_jobs_queued",
            "Jobs waiting for a worker (queue depth).",
            value=stats.jobs_queued,
        )
        yield GaugeMetricFamily(
            "strongroom_workers_live",
            "Worker hosts whose heartbeat is recent (scaled-out layout).",
            value=len(stats.live_workers),
        )
        seen = GaugeMetricFamily(
            "strongroom_worker_last_seen_timestamp_seconds",
            "Each worker host's last heartbeat (Unix time).",
            labels=["host_id"],
        )
        for host_id, at in sorted(stats.workers_seen.items()):
            seen.add_metric([host_id], _seconds(at))
        yield seen
