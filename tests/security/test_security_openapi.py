"""/openapi.json documents every route the app serves, its parameters, bodies, and the Trove
fault shape for errors; and the hostile bodies that once reached the database are refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from jsonschema import Draft202012Validator

from fixtures.service import Harness
from security.wire import assert_fault
from strongroom.api.dashboard import is_dashboard_path
from strongroom.api.docs import PUBLIC_PATHS as DOCS_PATHS

# The document itself and the Swagger UI page with its assets (strongroom.api.docs).
FASTAPI_OWN = {"/openapi.json", *DOCS_PATHS}
QUERY = {
    ("get", "/v1.0/{project_id}/backups"): {
        "instance_id",
        "datastore",
        "project_id",
        "all_projects",
        "limit",
        "marker",
    },
    ("post", "/v1.0/{project_id}/backups"): {"limit", "marker"},
    ("get", "/v1.0/{project_id}/instances/{instance_id}/backups"): {"limit", "marker"},
    ("get", "/v1.0/{project_id}/instances"): {"limit", "marker"},
    ("get", "/v1.0/{project_id}/instances/{instance_id}/users"): {"limit", "marker"},
    ("get", "/v1.0/{project_id}/instances/{instance_id}/databases"): {"limit", "marker"},
    ("get", "/v1.0/{project_id}/backup_strategies"): {"instance_id", "project_id"},
    ("delete", "/v1.0/{project_id}/backup_strategies"): {"instance_id", "project_id"},
    ("get", "/v1.0/{project_id}/backup_schedules"): {"instance_id"},
    ("post", "/v1.0/{project_id}/backup_schedules/{schedule_id}/prune"): {"dry_run"},
}
# Actions on a resource named by the path: they take no body.
BODILESS_POSTS = {
    "/v1.0/{project_id}/backup_schedules/{schedule_id}/run",
    "/v1.0/{project_id}/backup_schedules/{schedule_id}/prune",
    "/v1.0/{project_id}/backups/{backup_id}/verify",
    "/v1.0/{project_id}/backups/{backup_id}/drill",
}


def _document(harness: Harness) -> dict[str, Any]:
    r = harness.client.get("/openapi.json")
    assert r.status_code == 200
    document: dict[str, Any] = r.json()
    return document


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, item in document["paths"].items() for m, op in item.items()]


def test_every_served_route_is_documented(harness: Harness) -> None:
    document = _document(harness)
    served = set()
    for route in iter_route_contexts(harness.client.app.routes):
        for method in route.methods or ():
            # The dashboard's HTML pages are not API operations.
            if route.path not in FASTAPI_OWN and not is_dashboard_path(route.path):
                served.add((method.lower(), route.path))
    documented = {(m, p) for m, p, _ in _operations(document)}
    assert served == documented
    assert len(served) >= 20


def test_every_operation_declares_trove_faults(harness: Harness) -> None:
    document = _document(harness)
    fault = document["components"]["schemas"]["Fault"]
    body = document["components"]["schemas"]["FaultBody"]
    assert (fault["minProperties"], fault["maxProperties"]) == (1, 1)
    assert set(body["required"]) == {"code", "message"}
    for method, path, op in _operations(document):
        errors = {code: r for code, r in op["responses"].items() if code[0] in "45"}
        assert "500" in errors, (method, path)
        if path.startswith("/v1.0/{project_id}"):
            assert {"400", "401", "403", "404"} <= set(errors), (method, path)
            assert op["security"] == [{"keystoneToken": []}]
        for code, response in errors.items():
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Fault"}, (method, path, code)
        success = [c for c in op["responses"] if c.startswith("2")]
        assert len(success) == 1, (method, path)


def test_parameters_and_bodies_are_documented(harness: Harness) -> None:
    document = _document(harness)
    for method, path, op in _operations(document):
        names = {(p["name"], p["in"]) for p in op.get("parameters", [])}
        for segment in path.split("/"):
            if segment.startswith("{"):
                assert (segment[1:-1], "path") in names, (method, path)
        expected = QUERY.get((method, path), set())
        assert {n for n, where in names if where == "query"} == expected, (method, path)
        if method == "post" and path in BODILESS_POSTS:
            assert "requestBody" not in op, (method, path)
        elif method == "post" and op["requestBody"]["required"]:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            assert schema["required"], (method, path)
    assert document["components"]["securitySchemes"]["keystoneToken"]["name"] == "X-Auth-Token"


def test_documented_success_schemas_match_real_bodies(harness: Harness) -> None:
    document = _document(harness)
    paths = document["paths"]
    inst = harness.a.create_instance()
    harness.a.wait_instance(inst["id"])
    backup = harness.a.wait_backup(harness.a.create_backup(inst["id"])["id"])
    checks = [
        ("/v1.0/{project_id}/backups", "get", harness.a.get("/backups")),
        (
            "/v1.0/{project_id}/backups/{backup_id}",
            "get",
            harness.a.get(f"/backups/{backup['id']}"),
        ),
        (
            "/v1.0/{project_id}/instances/{instance_id}",
            "get",
            harness.a.get(f"/instances/{inst['id']}"),
        ),
        ("/v1.0/{project_id}/datastores", "get", harness.a.get("/datastores")),
        ("/", "get", harness.client.get("/")),
    ]
    for path, method, response in checks:
        schema = paths[path][method]["responses"][str(response.status_code)]["content"]
        Draft202012Validator(schema["application/json"]["schema"]).validate(response.json())


@pytest.mark.parametrize(
    "raw",
    [
        b'{"backup": {"name": "a\\ud800", "instance": "00000000-0000-0000-0000-000000000000"}}',
        b'{"backup_strategy": {"swift_container": "c\\udfff"}}',
        b'{"instance": {"name": "\\ud83d x", "flavorRef": "1"}}',
        b'{"backup": {"name": "x", "restore_from": {"remote_location": "file:///x",'
        b' "local_datastore_version_id": "00000000-0000-0000-0000-000000000000",'
        b' "size": NaN}}}',
        b'{"backup": {"name": "x", "incremental": Infinity}}',
    ],
    ids=["surrogate-name", "surrogate-container", "surrogate-instance", "nan", "infinity"],
)
def test_bodies_json_cannot_carry_are_400(harness: Harness, raw: bytes) -> None:
    path = "/backups" if b'"backup"' in raw else "/backup_strategies"
    if b'"instance"' in raw and b'"backup"' not in raw:
        path = "/instances"
    r = harness.a.post(path, content=raw, headers={"Content-Type": "application/json"})
    assert_fault(r, 400)


def test_restore_from_sizes_no_number_type_holds_are_400(harness: Harness) -> None:
    """Reached with a readable manifest: 1e400 became inf (stored, then every listing of the
    project failed to render) and a 400-digit integer overflowed float()."""
    inst = harness.a.create_instance()
    harness.a.wait_instance(inst["id"])
    backup = harness.a.wait_backup(harness.a.create_backup(inst["id"])["id"])
    for size in ("1e400", "-1e400", "1" + "0" * 400):
        template = {
            "backup": {
                "name": "x",
                "restore_from": {
                    "remote_location": backup["locationRef"],
                    "local_datastore_version_id": backup["datastore"]["version_id"],
                    "size": 0,
                },
            }
        }
        raw = json.dumps(template).replace('"size": 0', f'"size": {size}')
        r = harness.a.post(
            "/backups", content=raw.encode(), headers={"Content-Type": "application/json"}
        )
        assert_fault(r, 400)
    assert harness.a.get("/backups").status_code == 200
