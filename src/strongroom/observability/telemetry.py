"""PrometheusTelemetry: the services' Telemetry as Prometheus counters and histograms.

Labels are closed sets (datastore, outcome, store name, error class, verification
status, job kind); tenants appear only in the metadata collector's series, by id."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from strongroom.observability import multiprocess

# Backups and restores run from seconds (a small SQLite file) to hours.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)


class PrometheusTelemetry:
    """In multi-process mode the values go to the shared directory (``registry`` is then
    None: the listener's MultiProcessCollector reads them); otherwise to a registry of
    this object's own, so that several services in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry: CollectorRegistry | None = (
            None if multiprocess.active() else CollectorRegistry(auto_describe=True)
        )
        r = self.registry
        self.backups_finished = Counter(
            "strongroom_backups_finished",
            "Backup jobs finished, by datastore and outcome (completed, failed).",
            ["datastore", "outcome"],
            registry=r,
        )
        self.backup_duration = Histogram(
            "strongroom_backup_duration_seconds",
            "Time from a backup job's start to its end, by datastore and outcome.",
            ["datastore", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.restore_duration = Histogram(
            "strongroom_restore_duration_seconds",
            "Time to restore a backup into a new instance, by datastore and outcome.",
            ["datastore", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.bytes_read = Counter(
            "strongroom_backup_read_bytes",
            "Bytes read from databases by completed backups (before compression).",
            ["datastore"],
            registry=r,
        )
        self.bytes_stored = Counter(
            "strongroom_backup_stored_bytes",
            "Bytes written to the stores by completed backups (compressed, encrypted).",
            ["datastore"],
            registry=r,
        )
        self.store_errors = Counter(
            "strongroom_store_errors",
            "Storage errors that reached the service after retries, by store and kind.",
            ["store", "kind"],
            registry=r,
        )
        self.schedule_runs = Counter(
            "strongroom_schedule_runs",
            "Due schedule runs, by outcome (started, failed: no backup could start).",
            ["outcome"],
            registry=r,
        )
        self.verifications = Counter(
            "strongroom_verifications",
            "Backups read back and checked, by result (OK, CORRUPT, MISSING, ERROR).",
            ["result"],
            registry=r,
        )
        # Summed over the live processes of this listener; a dead process's share is
        # dropped at the next scrape (multiprocess.forget_dead_processes).
        self.jobs_in_progress = Gauge(
            "strongroom_jobs_in_progress",
            "Jobs running now in the processes of this listener, by kind.",
            ["kind"],
            registry=r,
            multiprocess_mode="livesum",
        )

    def backup_finished(
        self, *, datastore: str, outcome: str, seconds: float, read: int, stored: int
    ) -> None:
        self.backups_finished.labels(datastore, outcome).inc()
        self.backup_duration.labels(datastore, outcome).observe(seconds)
        if read:
            self.bytes_read.labels(datastore).inc(read)
        if stored:
            self.bytes_stored.labels(datastore).inc(stored)

    def restore_finished(self, *, datastore: str, outcome: str, seconds: float) -> None:
        self.restore_duration.labels(datastore, outcome).observe(seconds)

    def store_error(self, *, store: str, kind: str) -> None:
        self.store_errors.labels(store, kind).inc()

    def schedule_run(self, *, outcome: str) -> None:
        self.schedule_runs.labels(outcome).inc()

    def verification(self, *, result: str) -> None:
        self.verifications.labels(result).inc()

    def job_started(self, *, kind: str) -> None:
        self.jobs_in_progress.labels(kind).inc()

    def job_ended(self, *, kind: str) -> None:
        self.jobs_in_progress.labels(kind).dec()
