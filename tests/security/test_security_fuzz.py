"""Every documented operation of a live server, fuzzed with schemathesis.

Passes only if no response is a 5xx, every 4xx carries a Trove fault (one key whose value has
``code`` = the status and a string ``message``), every status is documented, and bodies match
their documented schemas. Requests come from members of two projects, an admin, and callers
without a valid token; generated ids are mixed with real ones so lookups also succeed.

STRONGROOM_FUZZ_EXAMPLES sets the examples per operation and mode (default 30).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from security.wire import LiveCaller, Site, fault_problem, live_site
from strongroom.api.app import create_app
from strongroom.services.container import Services

EXAMPLES = int(os.environ.get("STRONGROOM_FUZZ_EXAMPLES", "30"))

# The document does not depend on the services, so it can be read at collection time.
_NONE = cast(Any, None)
DOCUMENT = create_app(
    Services(backups=_NONE, instances=_NONE, datastores=_NONE, tokens=_NONE)
).openapi()
OPERATIONS = [(method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item]
ID_PARAMETERS = ("backup_id", "instance_id", "version_id", "datastore", "version", "flavor_id")
ID_BODY_KEYS = ("instance", "parent_id", "backupRef", "instance_id")


def trove_fault(ctx: CheckContext, response: schemathesis.Response, case: Case) -> bool | None:
    """Every 4xx and 5xx body is a Trove fault whose code is the status."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError as exc:
        raise AssertionError(
            f"{response.status_code} body is not JSON: {response.text!r:.200}"
        ) from exc
    problem = fault_problem(response.status_code, body)
    if problem is not None:
        raise AssertionError(f"{response.status_code} is not a Trove fault: {problem}")
    return True


def no_server_error(ctx: CheckContext, response: schemathesis.Response, case: Case) -> bool | None:
    """No 5xx but 501: Trove's notImplemented (users, databases and root of a datastore or
    instance without them), which trove_fault and status_code_conformance still check."""
    if response.status_code == 501:
        return True
    return not_a_server_error(ctx, response, case)


CHECKS = [
    no_server_error,
    trove_fault,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with live_site(tmp_path_factory.mktemp("fuzz")) as site:
        site.seed(site.a, "a")
        site.seed(site.b, "b")
        yield site


@pytest.fixture(scope="module")
def schema(site: Site) -> schemathesis.BaseSchema:
    document = httpx.get(f"{site.server.url}/openapi.json").json()
    assert document == DOCUMENT
    return schemathesis.openapi.from_dict(document)


def known_ids(site: Site) -> dict[str, list[str]]:
    instances = [d["instance"]["id"] for d in site.data.values()]
    backups = [d["backup"]["id"] for d in site.data.values()]
    datastores = site.admin.get("/datastores").json()["datastores"]
    versions = [v["id"] for d in datastores for v in d["versions"]]
    return {
        "backup_id": backups,
        "backupRef": backups,
        "parent_id": backups,
        "instance_id": instances,
        "instance": instances,
        "version_id": versions,
        "version": versions + [v["name"] for d in datastores for v in d["versions"]],
        "datastore": [d["id"] for d in datastores] + [d["name"] for d in datastores],
        "flavor_id": ["1", "6"],
    }


def _swap_ids(value: Any, data: st.DataObject, ids: dict[str, list[str]]) -> None:
    """Replace some generated ids inside a body with real ones (in place)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ID_BODY_KEYS and isinstance(item, str) and ids.get(key):
                value[key] = data.draw(st.sampled_from([item, *ids[key]]))
            else:
                _swap_ids(item, data, ids)
    elif isinstance(value, list):
        for item in value:
            _swap_ids(item, data, ids)


def _caller(site: Site, data: st.DataObject) -> tuple[str, dict[str, str]]:
    """(URL project, headers): a member of A or B, the admin, or a bad or missing token."""
    choice = data.draw(st.sampled_from(["a", "b", "admin", "a", "b", "no token", "bad token"]))
    if choice == "no token":
        return site.a.project, {}
    if choice == "bad token":
        return site.a.project, {"X-Auth-Token": "srt_" + "x" * 43}
    caller: LiveCaller = getattr(site, choice)
    return caller.project, {"X-Auth-Token": caller.token}


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_survives_fuzzing(
    site: Site, schema: schemathesis.BaseSchema, method: str, path: str
) -> None:
    operation = schema[path][method]
    ids = known_ids(site)
    seen: list[int] = []

    documented = DOCUMENT["paths"][path][method.lower()]
    modes = [GenerationMode.POSITIVE]
    if documented.get("parameters") or documented.get("requestBody"):
        modes.append(GenerationMode.NEGATIVE)  # schema-violating values, same checks
    for mode in modes:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=False,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
        def exercise(case: Case, data: st.DataObject) -> None:
            project, headers = _caller(site, data)
            if "project_id" in case.path_parameters:
                case.path_parameters["project_id"] = project
            for name in ID_PARAMETERS:
                if name in (case.path_parameters or {}) and ids.get(name):
                    generated = case.path_parameters[name]
                    case.path_parameters[name] = data.draw(st.sampled_from([generated, *ids[name]]))
            negative = case.meta is not None and case.meta.generation.mode.is_negative
            if not negative:
                _swap_ids(case.body, data, ids)
            response = case.call(base_url=site.server.url, headers=headers, timeout=30)
            seen.append(response.status_code)
            case.validate_response(response, checks=CHECKS, headers=headers)

        exercise()
    assert seen, "no request was sent"
    assert site.server.process.poll() is None, "the server died"
