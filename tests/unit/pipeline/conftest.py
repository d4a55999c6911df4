"""Fixtures for pipeline tests."""

from __future__ import annotations

import pytest

from strongroom.pipeline import MasterKey


@pytest.fixture(scope="session")
def master_key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture(scope="session")
def other_key() -> MasterKey:
    return MasterKey.generate()
