"""The placement host of a new instance is the operator's choice, not a member's."""


def test_instance_host_is_refused_for_members(harness):
    r = harness.a.post(
        "/instances",
        {"instance": {"name": "placed", "datastore": {"type": "sqlite"}, "host": "local"}},
    )
    assert r.status_code == 403, r.text
    assert "forbidden" in r.json()
    assert harness.a.get("/instances").json()["instances"] == []


def test_instance_host_is_accepted_from_an_admin(harness):
    r = harness.admin.post(
        "/instances",
        {"instance": {"name": "placed", "datastore": {"type": "sqlite"}, "host": "local"}},
    )
    assert r.status_code == 200, r.text
    harness.admin.wait_instance(r.json()["instance"]["id"])


def test_instance_host_that_is_no_worker_is_still_400_for_an_admin(harness):
    r = harness.admin.post(
        "/instances",
        {"instance": {"name": "placed", "datastore": {"type": "sqlite"}, "host": "nowhere"}},
    )
    assert r.status_code == 400, r.text
