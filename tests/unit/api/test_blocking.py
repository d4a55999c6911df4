"""Blocking calls: a project's share of threads is bounded; other projects still run."""

from __future__ import annotations

import threading

import anyio
import pytest

from strongroom.api.blocking import BlockingCalls, ServiceBusyError


def test_a_project_over_its_share_waits_then_is_refused_while_others_run() -> None:
    calls = BlockingCalls(threads=4, per_project=1, wait_seconds=0.3)
    release = threading.Event()
    outcomes: dict[str, object] = {}

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def held() -> None:
                outcomes["held"] = await calls.run("a", release.wait, 10)

            tg.start_soon(held)
            await anyio.sleep(0.05)
            with pytest.raises(ServiceBusyError):
                await calls.run("a", lambda: "second")
            outcomes["other"] = await calls.run("b", lambda: "b ran")
            release.set()

    anyio.run(main)
    assert outcomes == {"held": True, "other": "b ran"}
    assert calls._projects == {}  # idle projects are forgotten


def test_the_service_wide_bound_refuses_rather_than_queue_forever() -> None:
    calls = BlockingCalls(threads=1, per_project=1, wait_seconds=0.2)
    release = threading.Event()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(calls.run, "a", release.wait, 10)
            await anyio.sleep(0.05)
            with pytest.raises(ServiceBusyError):
                await calls.run("b", lambda: None)
            release.set()

    anyio.run(main)
