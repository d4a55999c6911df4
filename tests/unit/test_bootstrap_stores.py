"""Start-up store checks: refused credentials stop the service, an unreachable store warns."""

from __future__ import annotations

import logging

import pytest

from strongroom import bootstrap
from strongroom.bootstrap import StartupError
from strongroom.storage.errors import StorageAuthError, StorageError, TransientStorageError


class CheckedStores:
    """Stands in for the store catalog: the problems its stores report at start-up."""

    def __init__(self, problems: dict[str, StorageError]) -> None:
        self._problems = problems
        self.closed = False

    def check_all(self) -> dict[str, StorageError]:
        return self._problems

    def close(self) -> None:
        self.closed = True


def test_refused_credentials_stop_the_start() -> None:
    stores = CheckedStores({"swift": StorageAuthError("401 Unauthorized")})
    with pytest.raises(StartupError, match="refused the configured credentials"):
        bootstrap._check_stores(stores)  # type: ignore[arg-type]
    assert stores.closed


class ExpiredCredentials(StorageAuthError):
    pass


def test_the_kind_of_error_decides_not_its_name() -> None:
    stores = CheckedStores({"s3": ExpiredCredentials("token expired")})
    with pytest.raises(StartupError, match="ExpiredCredentials: token expired"):
        bootstrap._check_stores(stores)  # type: ignore[arg-type]


def test_an_unreachable_store_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    stores = CheckedStores({"s3": TransientStorageError("StorageAuthError: timed out")})
    with caplog.at_level(logging.WARNING):
        bootstrap._check_stores(stores)  # type: ignore[arg-type]
    assert not stores.closed
    assert "not reachable now" in caplog.text
