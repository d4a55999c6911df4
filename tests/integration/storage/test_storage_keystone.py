"""SwiftBackend with Keystone v3 auth, against a real Keystone and a Swift that trusts it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from fixtures.keystone import (
    KeystoneProject,
    KeystoneServer,
    create_user,
    make_keystone_store_config,
)
from fixtures.swift import unique_container
from strongroom.storage.errors import StorageAuthError, StorageError
from strongroom.storage.registry import build_backend
from strongroom.storage.swift import SwiftBackend

pytestmark = pytest.mark.integration


AUTH_METHODS = [
    pytest.param(False, id="password"),
    pytest.param(True, id="application-credential"),
]


def _refused_logins(server: KeystoneServer) -> int:
    """How many token requests Keystone has refused so far, from its access log (gunicorn
    writes a line after the response, so wait until the count stays put)."""
    log = Path(server.base) / "log" / "keystone-access.log"

    def count() -> int:
        return sum(
            1
            for line in log.read_text().splitlines()
            if '"POST /v3/auth/tokens ' in line and '" 401 ' in line
        )

    seen = count()
    for _ in range(20):
        time.sleep(0.25)
        now = count()
        if now == seen:
            return now
        seen = now
    return seen


@pytest.mark.parametrize("application_credential", AUTH_METHODS)
def test_round_trip(keystone_project: KeystoneProject, application_credential: bool) -> None:
    config = make_keystone_store_config(
        keystone_project, application_credential=application_credential
    )
    sleeps: list[float] = []
    backend = build_backend(config, sleep=sleeps.append)
    container = config.default_container
    key = f"{container}/backups/b1/chunk 0001"
    try:
        backend.check()
        backend.put(key, b"through keystone")
        backend.put(f"{container}/backups/b1/chunk 0002", b"second")
        assert backend.get(key) == b"through keystone"
        assert backend.stat(key).size == len(b"through keystone")
        assert backend.list(f"{container}/backups/") == [
            f"{container}/backups/b1/chunk 0001",
            f"{container}/backups/b1/chunk 0002",
        ]
        url = backend.url_for(key)
        assert url == f"{keystone_project.storage_url}/{container}/backups/b1/chunk%200001"
        assert backend.key_for_url(url) == key
        backend.delete(key)
        assert backend.list(f"{container}/backups/") == [f"{container}/backups/b1/chunk 0002"]
        assert sleeps == []
    finally:
        backend.close()


def _expire_token(backend: SwiftBackend) -> None:
    """Make the backend hold a token that Swift refuses, as it would after the token expired."""
    conn = backend._connection()
    conn.token = "gAAAAA-not-a-valid-token"
    backend._shared_token = conn.token


@pytest.mark.parametrize("application_credential", AUTH_METHODS)
def test_refused_token_is_renewed(
    keystone_project: KeystoneProject, application_credential: bool
) -> None:
    config = make_keystone_store_config(
        keystone_project, application_credential=application_credential
    )
    backend = SwiftBackend(config)
    key = f"{config.default_container}/renewed"
    try:
        backend.put(key, b"before")
        _expire_token(backend)
        assert backend.get(key) == b"before"
        _expire_token(backend)
        backend.put(key, b"after")
        assert backend.get(key) == b"after"
    finally:
        backend.close()


@pytest.mark.parametrize("application_credential", AUTH_METHODS)
def test_wrong_secret_is_a_clear_auth_error_without_retries(
    keystone_project: KeystoneProject, application_credential: bool
) -> None:
    wrong = "wrong-secret-9f3c1d"
    if application_credential:
        overrides: dict[str, Any] = {"application_credential_secret": wrong}
        who = keystone_project.application_credential_id
    else:
        overrides = {"password": wrong}
        who = keystone_project.username
    config = make_keystone_store_config(
        keystone_project, application_credential=application_credential, **overrides
    )
    sleeps: list[float] = []
    backend = build_backend(config, sleep=sleeps.append)
    refused_before = _refused_logins(keystone_project.server)
    try:
        with pytest.raises(StorageAuthError) as caught:
            backend.put(f"{config.default_container}/x", b"never stored")
    finally:
        backend.close()
    message = str(caught.value)
    assert keystone_project.server.auth_url in message
    assert who in message
    for secret in (
        wrong,
        keystone_project.password,
        keystone_project.application_credential_secret,
    ):
        assert secret not in message
    assert sleeps == []
    assert _refused_logins(keystone_project.server) - refused_before == 1


def test_user_without_a_role_on_the_project_is_refused(
    keystone_project: KeystoneProject, keystone_admin: Any
) -> None:
    user, password = create_user(keystone_admin, keystone_project.project_id, roles=())
    config = make_keystone_store_config(keystone_project, username=user.name, password=password)
    backend = build_backend(config, sleep=lambda _: None)
    try:
        with pytest.raises(StorageAuthError) as caught:
            backend.put(f"{config.default_container}/x", b"never stored")
    finally:
        backend.close()
    message = str(caught.value)
    assert user.name in message and keystone_project.project_name in message
    assert password not in message


def test_reader_role_cannot_write(keystone_project: KeystoneProject, keystone_admin: Any) -> None:
    user, password = create_user(keystone_admin, keystone_project.project_id, roles=("reader",))
    config = make_keystone_store_config(keystone_project, username=user.name, password=password)
    backend = build_backend(config, sleep=lambda _: None)
    try:
        with pytest.raises(StorageAuthError) as caught:
            backend.put(f"{config.default_container}/x", b"never stored")
    finally:
        backend.close()
    assert "access denied (HTTP 403" in str(caught.value)
    assert password not in str(caught.value)


def test_unknown_region_names_the_catalog(keystone_project: KeystoneProject) -> None:
    config = make_keystone_store_config(keystone_project, region_name="NoSuchRegion")
    backend = build_backend(config, sleep=lambda _: None)
    try:
        with pytest.raises(StorageError) as caught:
            backend.put(f"{unique_container()}/x", b"never stored")
    finally:
        backend.close()
    assert not isinstance(caught.value, StorageAuthError)
    message = str(caught.value)
    assert "object-store" in message and "NoSuchRegion" in message
