"""A pass run every so often on a daemon thread: the backup scheduler's and the
point-in-time archiver's loop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class Periodic:
    """Calls ``run`` every ``interval`` seconds until stopped. A pass that raises is logged
    on ``log`` (as ``failure``) and the next pass comes on time: one bad pass must not end
    the loop."""

    def __init__(
        self,
        run: Callable[[], object],
        *,
        interval: float,
        name: str,
        log: logging.Logger,
        failure: str,
    ) -> None:
        self._run_once = run
        self._interval = interval
        self._name = name
        self._log = log
        self._failure = failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Start the thread; False when it already runs."""
        if self._thread is not None:
            return False
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._run_once()
            except Exception:
                self._log.exception(self._failure)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
