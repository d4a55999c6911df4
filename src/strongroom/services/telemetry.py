"""What the use cases count, as one small interface; bootstrap gives them the Prometheus
implementation (``strongroom.metrics``) or this module's ``NO_TELEMETRY``.

Labels are closed sets (datastore names, outcomes, error kinds): never a tenant's name,
an object key or a message."""

from __future__ import annotations

from typing import Protocol


class Telemetry(Protocol):
    def backup_finished(
        self, *, datastore: str, outcome: str, seconds: float, read: int, stored: int
    ) -> None:
        """``outcome``: completed or failed; ``read``/``stored``: plaintext and stored bytes."""

    def restore_finished(self, *, datastore: str, outcome: str, seconds: float) -> None: ...

    def store_error(self, *, store: str, kind: str) -> None:
        """``kind``: the storage error's class name (e.g. StorageUnavailableError)."""

    def schedule_run(self, *, outcome: str) -> None:
        """``outcome``: started or failed (a due schedule that could not start a backup)."""

    def verification(self, *, result: str) -> None:
        """``result``: the verification's status (OK, CORRUPT, …)."""

    def job_started(self, *, kind: str) -> None: ...

    def job_ended(self, *, kind: str) -> None: ...


class NoTelemetry:
    def backup_finished(
        self, *, datastore: str, outcome: str, seconds: float, read: int, stored: int
    ) -> None:
        pass

    def restore_finished(self, *, datastore: str, outcome: str, seconds: float) -> None:
        pass

    def store_error(self, *, store: str, kind: str) -> None:
        pass

    def schedule_run(self, *, outcome: str) -> None:
        pass

    def verification(self, *, result: str) -> None:
        pass

    def job_started(self, *, kind: str) -> None:
        pass

    def job_ended(self, *, kind: str) -> None:
        pass


NO_TELEMETRY: Telemetry = NoTelemetry()
