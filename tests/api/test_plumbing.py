"""Trove compatibility: versions, auth, routing, bodies."""

import re


def test_versions_document_without_token(harness):
    r = harness.client.get("/")
    assert r.status_code == 200
    version = r.json()["versions"][0]
    assert version["id"] == "v1.0"
    assert version["status"] == "CURRENT"
    assert version["updated"] == "2012-08-01T00:00:00Z"
    assert version["links"][0]["rel"] == "self"
    assert version["links"][0]["href"].endswith("/v1.0/")


def test_version_root_is_served(harness):
    r = harness.client.get("/v1.0")
    assert r.status_code == 200
    assert r.json()["version"]["id"] == "v1.0"


def test_url_project_must_match_token_project_even_for_admin(harness):
    r = harness.client.get(
        f"/v1.0/{harness.b.project}/backups", headers={"X-Auth-Token": harness.a.token}
    )
    assert r.status_code == 403
    assert r.json()["forbidden"]["code"] == 403
    r = harness.client.get(
        f"/v1.0/{harness.a.project}/backups", headers={"X-Auth-Token": harness.admin.token}
    )
    assert r.status_code == 403


def test_missing_or_bad_token_is_401_with_parsable_body(harness):
    for headers in ({}, {"X-Auth-Token": "nope"}, {"X-Auth-Token": "notused"}):
        r = harness.client.get(f"/v1.0/{harness.a.project}/backups", headers=headers)
        assert r.status_code == 401
        assert r.json()["unauthorized"]["message"]
        assert "WWW-Authenticate" in r.headers


def test_revoked_token_is_refused(harness):
    tokens = harness.container.services.tokens
    issued = tokens.create(project_id="p3", user_id="u", roles=("member",))
    assert (
        harness.client.get("/v1.0/p3/backups", headers={"X-Auth-Token": issued.token}).status_code
        == 200
    )
    tokens.revoke(issued.id)
    assert (
        harness.client.get("/v1.0/p3/backups", headers={"X-Auth-Token": issued.token}).status_code
        == 401
    )


def test_unknown_path_and_unsupported_method_are_item_not_found(harness):
    r = harness.a.get("/nothing-here")
    assert r.status_code == 404
    assert r.json() == {
        "itemNotFound": {"code": 404, "message": "The resource could not be found."}
    }
    r = harness.client.put(
        harness.a.url("/backups/abc"), headers={"X-Auth-Token": harness.a.token}, json={}
    )
    assert r.status_code == 404
    assert "itemNotFound" in r.json()


def test_malformed_json_and_wrong_media_type(harness):
    r = harness.a.post(
        "/backups", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["badRequest"]["message"] == "Malformed request body"
    r = harness.a.post("/backups", content=b"hello", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = harness.client.post(
        harness.a.url("/backups"),
        content=b'{"backup": {}}',
        headers={"X-Auth-Token": harness.a.token},
    )
    assert r.status_code == 400


def test_body_over_the_limit_is_413(harness):
    big = {"backup": {"name": "x" * (2 * 1024 * 1024)}}
    r = harness.a.post("/backups", big)
    assert r.status_code == 413
    assert "overLimit" in r.json()


def test_timestamps_have_no_fraction_or_zone(harness):
    inst = harness.a.create_instance()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", inst["created"])


def test_an_unexpected_error_is_a_500_fault_without_internals(harness, monkeypatch, caplog):
    def broken(*_args, **_kwargs):
        raise RuntimeError("internal detail /srv/secret")

    monkeypatch.setattr(harness.container.services.backups, "list", broken)
    r = harness.a.get("/backups")
    assert r.status_code == 500
    fault = r.json()["instanceFault"]
    assert fault["code"] == 500
    assert "secret" not in r.text
    incident = re.search(r"\(([0-9a-f-]{36})\)", fault["message"]).group(1)
    assert incident in caplog.text  # the log keeps the cause under the same id
    assert harness.a.get(f"/backups/{'0' * 8}").status_code == 404  # the service goes on


def test_api_routes_are_matched_at_the_application_level(harness):
    """The API's routes are the application's own: an included router is matched once
    more at each level (see create_app), and a prefix given twice would be a 404."""
    from fastapi.routing import APIRoute

    from strongroom.api.routes import backups, instances, schedules

    app = harness.client.app
    for module in (backups, instances, schedules):
        assert all(route in app.router.routes for route in module.router.routes)
    paths = {r.path for r in app.router.routes if isinstance(r, APIRoute)}
    assert "/v1.0/{project_id}/backups/{backup_id}" in paths
    assert all(p.count("{project_id}") <= 1 for p in paths)
    r = harness.client.get(
        f"/v1.0/{harness.a.project}/backups", headers={"X-Auth-Token": harness.a.token}
    )
    assert r.status_code == 200
    assert r.json() == {"backups": []}
