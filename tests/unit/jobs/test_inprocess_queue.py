"""The embedded job pool holds a job once, however often it is submitted (a hand-off and
its redelivery may both arrive)."""

from __future__ import annotations

import threading

from strongroom.domain.model import JobId
from strongroom.jobs.inprocess import InProcessJobQueue


def test_a_job_submitted_twice_while_it_waits_runs_once() -> None:
    ran: list[JobId] = []
    done = threading.Event()

    def run(job_id: JobId) -> None:
        ran.append(job_id)
        if len(ran) == 2:
            done.set()

    queue = InProcessJobQueue(run, workers=2)
    try:
        queue.hold()
        first, second = JobId("job-1"), JobId("job-2")
        for job_id in (first, first, second, first):
            queue.submit(job_id)
        assert queue.holds(first) and queue.holds(second)
        queue.release()
        assert done.wait(10)
    finally:
        queue.shutdown()
    assert sorted(ran) == [first, second]
    assert not queue.holds(first)  # finished: a later submission would run it again


def test_a_finished_job_can_be_submitted_again() -> None:
    ran: list[JobId] = []
    finished = threading.Semaphore(0)

    def run(job_id: JobId) -> None:
        ran.append(job_id)
        finished.release()

    queue = InProcessJobQueue(run, workers=1)
    try:
        queue.submit(JobId("job-1"))
        assert finished.acquire(timeout=10)
        # The done-callback that forgets the id runs just after the job returns.
        for _ in range(1000):
            if not queue.holds(JobId("job-1")):
                break
            threading.Event().wait(0.01)
        queue.submit(JobId("job-1"))
        assert finished.acquire(timeout=10)
    finally:
        queue.shutdown()
    assert ran == [JobId("job-1"), JobId("job-1")]
