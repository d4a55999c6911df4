"""The homes of the instances restore drills make, recorded as the engine makes them, and
the check that each is gone afterwards with everything it ran (shared by the engines' drill
suites)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from strongroom.engines.base import Engine, InstanceRequest
from strongroom.engines.identity import InstanceIdentity, name_for


class DrillHomes:
    """Records the home of every instance the engine restores (the drills' homes);
    ``running`` lists the processes still running out of a home."""

    def __init__(
        self,
        engine: Engine,
        monkeypatch: pytest.MonkeyPatch,
        running: Callable[[Path], list[Any]],
    ) -> None:
        self.homes: list[Path] = []
        self._running = running
        real = engine.restore_instance

        def recording(home: Path, chain: Any, request: InstanceRequest, **kw: Any) -> Any:
            self.homes.append(Path(home))
            return real(home, chain, request, **kw)

        monkeypatch.setattr(engine, "restore_instance", recording)

    def assert_gone(self) -> None:
        assert self.homes, "no drill instance was made"
        for home in self.homes:
            assert home.name.startswith("drill-")
            assert not home.exists(), home
            assert self._running(home) == []
            assert InstanceIdentity.lookup(name_for(home)) is None, "its OS user is left"
