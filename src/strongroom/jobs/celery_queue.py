"""Jobs over Celery (RabbitMQ): one queue per worker host, plus a shared queue.

A message carries a job id only; the job row is the truth. Tasks are acknowledged late (a
message whose worker dies is delivered again) and the handler claims the row, so a
redelivered message never runs a job twice."""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Celery
from celery.signals import worker_ready

from strongroom.domain.model import SHARED_ROUTE, JobId

log = logging.getLogger(__name__)

TASK_NAME = "strongroom.run_job"


def queue_name(prefix: str, route: str) -> str:
    return f"{prefix}.{route}"


def make_celery(broker_url: str, *, prefix: str, publish_timeout: float = 3.0) -> Celery:
    app = Celery("strongroom", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_default_queue=queue_name(prefix, SHARED_ROUTE),
        broker_connection_timeout=publish_timeout,
        broker_connection_retry_on_startup=True,
        # An API request must not hang on a broker that is down: publish fails fast and
        # the job row stays QUEUED for the reaper to dispatch again.
        task_publish_retry=True,
        task_publish_retry_policy={
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 0.5,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # No remote control: its per-worker exclusive queue would clash between two
        # deployments sharing a broker, and nothing here uses it.
        worker_enable_remote_control=False,
    )
    return app


class CeleryJobQueue:
    def __init__(self, app: Celery, *, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    def submit(self, job_id: JobId, route: str) -> None:
        self.app.send_task(TASK_NAME, args=[job_id], queue=queue_name(self.prefix, route))

    def shutdown(self) -> None:
        self.app.close()


def run_worker(
    app: Celery,
    *,
    prefix: str,
    host_id: str,
    run: Callable[[JobId], None],
    concurrency: int,
) -> None:
    """Consume this host's queue and the shared queue until stopped (SIGTERM: warm
    shutdown, running jobs finish)."""

    @app.task(name=TASK_NAME, acks_late=True, ignore_result=True)
    def run_job(job_id: str) -> None:
        run(JobId(job_id))

    def announce_ready(**_: object) -> None:
        # Celery's own "ready." line is INFO of a logger the service keeps at WARNING.
        print(f"Strongroom worker for host {host_id!r} ready.", flush=True)

    worker_ready.connect(announce_ready, weak=False)

    queues = ",".join([queue_name(prefix, host_id), queue_name(prefix, SHARED_ROUTE)])
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            f"--queues={queues}",
            f"--hostname={prefix}-{host_id}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=INFO",
        ]
    )
