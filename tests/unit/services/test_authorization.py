"""Who is the cloud's admin (sees every project) is the policy's ``admin`` rule, decided when
a caller is authenticated: the admin role by default, narrower when a policy file says so."""

from __future__ import annotations

from pathlib import Path

from strongroom.services.authorization import Authorizer


def test_by_default_the_admin_role_is_admin() -> None:
    authz = Authorizer()
    assert authz.caller("proja", "u", ("admin", "member")).is_admin
    assert authz.caller("proja", "u", ("Admin",)).is_admin
    for roles in (("member",), ("reader",), ()):
        assert not authz.caller("proja", "u", roles).is_admin


def test_a_policy_file_narrowing_admin_narrows_who_sees_every_project(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('"admin": "role:admin and project_id:cloudadmin"\n')
    authz = Authorizer(policy)
    a_admin = authz.caller("proja", "u", ("admin", "member"))
    assert a_admin.project_id == "proja" and a_admin.roles == ("admin", "member")
    assert not a_admin.is_admin
    assert not authz.allowed(a_admin, "backup:index:all_projects", "proja")
    cloud = authz.caller("cloudadmin", "u", ("admin",))
    assert cloud.is_admin
    assert authz.allowed(cloud, "backup:index:all_projects", "cloudadmin")
