"""Calls that may block (a store, a database server, a lock held in a tenant's file) run
in threads, with a bounded share per project: one tenant's slow calls never hold the event
loop, nor every thread, and a call that cannot get a thread in time is refused (503)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from anyio import CapacityLimiter, to_thread

T = TypeVar("T")


class ServiceBusyError(Exception):
    """No thread for this call within the wait bound; the client may retry later."""


class BlockingCalls:
    def __init__(self, *, threads: int, per_project: int, wait_seconds: float) -> None:
        self._threads = threads
        self._per_project = per_project
        self._wait = wait_seconds
        self._total: CapacityLimiter | None = None  # made on the event loop, at first use
        self._unbounded: CapacityLimiter | None = None
        self._projects: dict[str, CapacityLimiter] = {}

    async def run(self, project_id: str, call: Callable[..., T], /, *args: Any, **kw: Any) -> T:
        """``call(*args, **kw)`` in a thread once this project and the service have one free.

        A call that has started runs to its end (its own bounds apply: engine and store
        timeouts): abandoning it would let it finish unseen after the client was told no."""
        if self._total is None or self._unbounded is None:
            self._total = CapacityLimiter(self._threads)
            self._unbounded = CapacityLimiter(math.inf)
        project = self._projects.get(project_id)
        if project is None:
            project = self._projects[project_id] = CapacityLimiter(self._per_project)
        try:
            with anyio.fail_after(self._wait):
                await project.acquire()
                try:
                    await self._total.acquire()
                except BaseException:
                    project.release()
                    raise
        except TimeoutError:
            self._forget_if_idle(project_id, project)
            raise ServiceBusyError(
                f"The service is busy with this project's requests (more than "
                f"{self._wait:g} s waiting); try again later."
            ) from None
        try:
            return await to_thread.run_sync(
                functools.partial(call, *args, **kw), limiter=self._unbounded
            )
        finally:
            self._total.release()
            project.release()
            self._forget_if_idle(project_id, project)

    def _forget_if_idle(self, project_id: str, project: CapacityLimiter) -> None:
        """Limiters of idle projects are dropped: the table holds only busy projects."""
        if project.borrowed_tokens == 0 and not project.statistics().tasks_waiting:
            self._projects.pop(project_id, None)
