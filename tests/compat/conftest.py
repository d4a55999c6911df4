"""The client suites run against both layouts: the embedded `strongroom serve`, and the
scaled-out one (API processes and workers over PostgreSQL and RabbitMQ)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.cluster import running_cluster
from fixtures.live import start_server


@pytest.fixture(scope="session", params=["embedded", "scaled-out"])
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    root = Path(tmp_path_factory.mktemp(f"compat-{request.param}"))
    if request.param == "embedded":
        server = start_server(root / "data")
        try:
            yield server
        finally:
            server.stop()
    else:
        with running_cluster(root) as cluster:
            yield cluster
