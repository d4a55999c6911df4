"""Liveness and readiness: is the process serving, can it reach what a request needs.

Readiness answers with fixed phrases and error class names only: a store's or a database
driver's message may carry an endpoint with credentials, so messages go to the log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import attrs

from strongroom.services.stores import StoreCatalog
from strongroom.storage.errors import StorageAuthError, StorageError

log = logging.getLogger(__name__)

OK = "ok"


@dataclass(frozen=True)
class Readiness:
    metadata: str
    stores: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.metadata == OK and all(v == OK for v in self.stores.values())


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class Health:
    """``draining`` is set when the process begins to shut down: /healthcheck then answers
    503 so a load balancer stops sending it requests."""

    _ping: Callable[[], None] = attrs.field(alias="ping_metadata")
    _stores: StoreCatalog
    timeout: float = 5.0
    draining: threading.Event = attrs.field(init=False, factory=threading.Event)
    _pool: ThreadPoolExecutor = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # Bounded: a check that hangs holds one thread; later probes wait, then time out.
        self._pool = ThreadPoolExecutor(
            max_workers=len(self._stores.names()) + 1, thread_name_prefix="readiness"
        )

    def readiness(self) -> Readiness:
        """Every check at once, each bounded by ``timeout`` (blocking: call off the loop)."""
        deadline = time.monotonic() + self.timeout
        metadata = self._pool.submit(self._metadata)
        stores = {name: self._pool.submit(self._store, name) for name in self._stores.names()}
        return Readiness(
            metadata=self._outcome("metadata", metadata, deadline),
            stores={n: self._outcome(f"store {n}", f, deadline) for n, f in stores.items()},
        )

    def _outcome(self, what: str, future: Future[str], deadline: float) -> str:
        try:
            result = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            log.warning("readiness: %s did not answer within %.1f s", what, self.timeout)
            return f"no answer within {self.timeout:g} s"
        return result

    def _metadata(self) -> str:
        try:
            self._ping()
        except Exception as exc:
            log.warning("readiness: metadata database: %s", exc)
            return f"unreachable ({type(exc).__name__})"
        return OK

    def _store(self, name: str) -> str:
        try:
            self._stores.backend(name).check()
        except StorageAuthError:
            log.warning("readiness: store %s refused the service's credentials", name)
            return "credentials refused"
        except StorageError as exc:
            log.warning("readiness: store %s: %s", name, exc)
            return f"unreachable ({type(exc).__name__})"
        except Exception as exc:
            log.warning("readiness: store %s: %s", name, exc)
            return f"check failed ({type(exc).__name__})"
        return OK

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
