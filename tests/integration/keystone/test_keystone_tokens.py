"""X-Auth-Token validated by a real Keystone, beside the service's own tokens."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.keystone import (
    SERVICE_TIMEOUTS,
    KeystoneServer,
    create_project,
    create_user,
    keystone_session,
)
from fixtures.service import Harness, make_harness


@pytest.fixture(scope="module")
def service_account(keystone_admin: Any) -> dict[str, str]:
    """Strongroom's own Keystone user: the ``service`` role lets it validate others' tokens."""
    project = create_project(keystone_admin, "svc")
    user, password = create_user(keystone_admin, project.id, ("service",))
    return {"username": user.name, "password": password, "project_name": project.name}


def keystone_table(
    server: KeystoneServer, account: dict[str, str], **overrides: Any
) -> dict[str, Any]:
    table: dict[str, Any] = {
        "enabled": True,
        "auth_url": server.auth_url,
        **account,
        "region_name": server.region,
        "interface": "public",
        **SERVICE_TIMEOUTS,
    }
    table.update(overrides)
    return table


def user_token(server: KeystoneServer, admin: Any, project_id: str, roles: tuple[str, ...]) -> str:
    user, password = create_user(admin, project_id, roles)
    sess = keystone_session(server, username=user.name, password=password, project_id=project_id)
    token: str = sess.get_token()
    return token


@pytest.fixture
def service(
    tmp_path: Path, keystone_server: KeystoneServer, service_account: dict[str, str]
) -> Iterator[Harness]:
    # token_cache_time = 0: every request asks Keystone, so a revocation shows at once.
    table = keystone_table(keystone_server, service_account, token_cache_time=0)
    harness = make_harness(tmp_path, keystone=table)
    with harness.client:
        yield harness


def get(harness: Harness, project: str, token: str, path: str = "/backups") -> Any:
    return harness.client.get(f"/v1.0/{project}{path}", headers={"X-Auth-Token": token})


def test_member_token_serves_its_project_only(
    service: Harness, keystone_server: KeystoneServer, keystone_admin: Any
) -> None:
    own, other = create_project(keystone_admin), create_project(keystone_admin)
    token = user_token(keystone_server, keystone_admin, own.id, ("member",))
    assert get(service, own.id, token).status_code == 200
    refused = get(service, other.id, token)
    assert refused.status_code == 403
    assert refused.json()["forbidden"]["code"] == 403


def test_admin_role_is_trove_admin(
    service: Harness, keystone_server: KeystoneServer, keystone_admin: Any
) -> None:
    project = create_project(keystone_admin)
    token = user_token(keystone_server, keystone_admin, project.id, ("admin",))
    listed = get(service, project.id, token, "/backups?all_projects=true")
    assert listed.status_code == 200, listed.text
    member = user_token(keystone_server, keystone_admin, project.id, ("member",))
    assert get(service, project.id, member, "/backups?all_projects=true").status_code == 403


def test_revoked_and_unknown_tokens_are_401(
    service: Harness, keystone_server: KeystoneServer, keystone_admin: Any
) -> None:
    project = create_project(keystone_admin)
    token = user_token(keystone_server, keystone_admin, project.id, ("member",))
    assert get(service, project.id, token).status_code == 200
    keystone_admin.tokens.revoke_token(token)
    assert get(service, project.id, token).status_code == 401
    assert get(service, project.id, token[:-4] + "AAAA").status_code == 401
    assert get(service, project.id, "not-a-token").status_code == 401


def test_token_of_a_user_without_a_role_on_the_project_is_not_issued_a_context(
    service: Harness, keystone_server: KeystoneServer, keystone_admin: Any
) -> None:
    """A token scoped to one project cannot be stretched to another by the URL, even when
    the user holds a role on both."""
    first, second = create_project(keystone_admin), create_project(keystone_admin)
    user, password = create_user(keystone_admin, first.id, ("member",))
    keystone_admin.roles.grant(keystone_admin.roles.find(name="member"), user=user, project=second)
    sess = keystone_session(
        keystone_server, username=user.name, password=password, project_id=first.id
    )
    token = sess.get_token()
    assert get(service, first.id, token).status_code == 200
    assert get(service, second.id, token).status_code == 403


def test_own_tokens_keep_working_beside_keystone(service: Harness) -> None:
    caller = service.callers["a"]
    assert get(service, caller.project, caller.token).status_code == 200


def test_keystone_down_is_503_in_bounded_time(tmp_path: Path) -> None:
    # Bound but not listening for the whole test: refused, and no other process can take it.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        _keystone_down(tmp_path, closed.getsockname()[1])


def _keystone_down(tmp_path: Path, port: int) -> None:
    table = {
        "enabled": True,
        "auth_url": f"http://127.0.0.1:{port}/v3",
        "username": "nobody",
        "password": "nothing",
        "project_name": "service",
        "validation_timeout": 3.0,
    }
    harness = make_harness(tmp_path, keystone=table)
    with harness.client:
        started = time.monotonic()
        answer = get(harness, "some-project", "a-keystone-token")
        assert answer.status_code == 503
        assert answer.json()["serviceUnavailable"]["code"] == 503
        assert time.monotonic() - started < 10
        caller = harness.callers["a"]  # the service's own tokens do not need Keystone
        assert get(harness, caller.project, caller.token).status_code == 200


def test_keystone_that_does_not_answer_is_503_within_the_timeout(tmp_path: Path) -> None:
    """A listener that accepts and never replies: the request ends by the timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        table = {
            "enabled": True,
            "auth_url": f"http://127.0.0.1:{port}/v3",
            "username": "nobody",
            "password": "nothing",
            "project_name": "service",
            "validation_timeout": 2.0,
            "http_connect_timeout": 30.0,
        }
        harness = make_harness(tmp_path, keystone=table)
        with harness.client:
            started = time.monotonic()
            answer = get(harness, "some-project", "a-keystone-token")
            assert answer.status_code == 503
            assert time.monotonic() - started < 8


def test_enabled_without_credentials_is_a_config_error() -> None:
    from pydantic import ValidationError

    from strongroom.config import KeystoneSettings

    with pytest.raises(ValidationError, match="lacks"):
        KeystoneSettings(enabled=True, auth_url="http://127.0.0.1:5000/v3")


def test_reader_lists_and_shows_but_may_not_create_or_delete(
    tmp_path: Path, service: Harness, keystone_server: KeystoneServer, keystone_admin: Any
) -> None:
    project = create_project(keystone_admin)
    member = user_token(keystone_server, keystone_admin, project.id, ("member",))
    reader = user_token(keystone_server, keystone_admin, project.id, ("reader",))
    headers = {"X-Auth-Token": member}
    db = tmp_path / "external" / f"{project.id}.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (v TEXT)")
    created = service.client.post(
        f"/v1.0/{project.id}/instances",
        json={
            "instance": {
                "name": "r",
                "datastore": {"type": "sqlite"},
                "external": {"path": str(db)},
            }
        },
        headers=headers,
    )
    assert created.status_code in (200, 202), created.text
    instance_id = created.json()["instance"]["id"]
    assert get(service, project.id, reader, "/instances").status_code == 200
    assert get(service, project.id, reader, f"/instances/{instance_id}").status_code == 200
    refused = service.client.post(
        f"/v1.0/{project.id}/backups",
        json={"backup": {"name": "b", "instance": instance_id}},
        headers={"X-Auth-Token": reader},
    )
    assert refused.status_code == 403, refused.text
    gone = service.client.delete(
        f"/v1.0/{project.id}/instances/{instance_id}", headers={"X-Auth-Token": reader}
    )
    assert gone.status_code == 403


def test_expired_token_is_401_even_while_cached(
    tmp_path: Path,
    keystone_server: KeystoneServer,
    keystone_admin: Any,
    service_account: dict[str, str],
) -> None:
    """A token's expiry bounds its time in the cache: with a 300 s cache, a token from an
    application credential expiring in seconds (Keystone ends the token with it) is
    refused once expired."""
    from datetime import UTC, datetime, timedelta

    from keystoneauth1 import session
    from keystoneauth1.identity import v3
    from keystoneclient.v3 import client

    project = create_project(keystone_admin)
    user, password = create_user(keystone_admin, project.id, ("member",))
    own = client.Client(
        session=keystone_session(
            keystone_server, username=user.name, password=password, project_id=project.id
        ),
        interface="public",
    )
    # The service first: the token's few seconds must not go on building it.
    harness = make_harness(
        tmp_path, keystone=keystone_table(keystone_server, service_account, token_cache_time=300)
    )
    with harness.client:
        # Long enough for the credential, its token and a first request to fit in on a
        # busy machine (the test then waits for the expiry itself).
        expires = datetime.now(UTC) + timedelta(seconds=15)
        credential = own.application_credentials.create(
            name="short", user=user.id, expires_at=expires.replace(tzinfo=None)
        )
        auth = v3.ApplicationCredential(
            auth_url=keystone_server.auth_url,
            application_credential_id=credential.id,
            application_credential_secret=credential.secret,
        )
        sess = session.Session(auth=auth)
        token = sess.get_token()
        token_expiry = sess.auth.get_access(sess).expires
        assert token_expiry <= expires + timedelta(seconds=1)
        assert get(harness, project.id, token).status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and datetime.now(UTC) <= token_expiry:
            time.sleep(0.2)  # waiting for the token's own expiry, a fixed time
        time.sleep(1)
        assert get(harness, project.id, token).status_code == 401


def test_admin_reaches_another_projects_instance_members_do_not(
    service: Harness, keystone_server: KeystoneServer, keystone_admin: Any
) -> None:
    owner_project, admin_project = create_project(keystone_admin), create_project(keystone_admin)
    other_project = create_project(keystone_admin)
    owner = user_token(keystone_server, keystone_admin, owner_project.id, ("member",))
    admin = user_token(keystone_server, keystone_admin, admin_project.id, ("admin",))
    stranger = user_token(keystone_server, keystone_admin, other_project.id, ("member",))
    body = {"instance": {"name": "db", "flavorRef": "1", "datastore": {"type": "sqlite"}}}
    created = service.client.post(
        f"/v1.0/{owner_project.id}/instances", json=body, headers={"X-Auth-Token": owner}
    )
    assert created.status_code == 200, created.text
    instance_id = created.json()["instance"]["id"]
    seen = get(service, admin_project.id, admin, f"/instances/{instance_id}")
    assert seen.status_code == 200, seen.text
    assert get(service, other_project.id, stranger, f"/instances/{instance_id}").status_code == 404
