"""Where metadata reads run, and how JSON bodies are rendered."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from strongroom.api.deps import read
from strongroom.api.rendering import JsonResponse
from strongroom.services.container import Services


def services(*, local_metadata: bool) -> Services:
    return Services(
        backups=None,  # type: ignore[arg-type]
        instances=None,  # type: ignore[arg-type]
        datastores=None,  # type: ignore[arg-type]
        tokens=None,  # type: ignore[arg-type]
        local_metadata=local_metadata,
    )


@pytest.mark.parametrize("local", [True, False])
def test_reads_run_on_the_loop_only_for_local_metadata(local: bool) -> None:
    def which_thread(tag: str, *, suffix: str) -> tuple[str, int]:
        return tag + suffix, threading.get_ident()

    async def go() -> tuple[tuple[str, int], int]:
        result = await read(services(local_metadata=local), which_thread, "a", suffix="b")
        return result, threading.get_ident()

    (value, reader), loop_thread = asyncio.run(go())
    assert value == "ab"
    assert (reader == loop_thread) is local


def test_errors_of_a_read_reach_the_caller() -> None:
    def fails() -> None:
        raise LookupError("gone")

    for local in (True, False):
        with pytest.raises(LookupError, match="gone"):
            asyncio.run(read(services(local_metadata=local), fails))


def test_json_bodies_are_compact_utf8_and_never_invalid() -> None:
    content = {"name": "sauvegarde é ✓", "size": 0.01, "n": 2**62, "none": None, "l": [1.5]}
    body = JsonResponse(content).body
    assert json.loads(body) == content
    assert body == json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    assert json.loads(JsonResponse({"x": float("nan"), "y": float("inf")}).body) == {
        "x": None,
        "y": None,
    }
    assert JsonResponse({}).headers["content-type"] == "application/json"
