"""A Keystone token's caller is an admin as the policy's ``admin`` rule says, as for the
service's own tokens (Keystone answered here by a stand-in for its client)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from strongroom.api.keystone import KeystoneTokens
from strongroom.config import KeystoneSettings
from strongroom.services.authorization import Authorizer


class _Tokens:
    def __init__(self, project_id: str, roles: list[str]) -> None:
        self.access = SimpleNamespace(
            project_scoped=True,
            project_id=project_id,
            user_id="u",
            role_names=roles,
            expires=None,
        )

    def validate(self, token: str, include_catalog: bool = True) -> Any:
        return self.access


def _caller(authz: Authorizer, project_id: str, roles: list[str]) -> Any:
    settings = KeystoneSettings(
        enabled=True,
        auth_url="http://127.0.0.1:1/v3",
        username="svc",
        password="x",
        project_name="service",
    )
    keystone = KeystoneTokens(settings, authz)
    try:
        keystone._client = SimpleNamespace(tokens=_Tokens(project_id, roles))
        judged = keystone.validate("token")
    finally:
        keystone.close()
    assert judged is not None
    return judged[0]


def test_a_keystone_admin_is_admin_by_the_policy(tmp_path: Path) -> None:
    assert _caller(Authorizer(), "proja", ["admin", "member"]).is_admin
    assert not _caller(Authorizer(), "proja", ["member", "reader"]).is_admin
    policy = tmp_path / "policy.yaml"
    policy.write_text('"admin": "role:admin and project_id:cloudadmin"\n')
    narrowed = Authorizer(policy)
    assert not _caller(narrowed, "proja", ["admin", "member"]).is_admin
    assert _caller(narrowed, "cloudadmin", ["admin"]).is_admin
