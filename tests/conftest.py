import os
from typing import Any

import pytest

pytest_plugins = ["fixtures.service", "fixtures.live", "fixtures.swift", "fixtures.keystone"]

# Many services start on this machine at once (here and in other test runs): the metrics
# listener of every process a test starts is off unless that test turns it on.
os.environ.setdefault("STRONGROOM_METRICS_PORT", "0")


def _shared_server(definitions: dict[str, Any]) -> str | None:
    """The group of the costly session-scoped server a test uses, if any: each such server
    then starts once per run rather than once per worker."""
    if "keystone_service" in definitions:  # Keystone and a keystone-mode Swift
        return "keystone"
    compat = definitions.get("live_server")  # `strongroom serve` and a scaled-out cluster
    if compat and compat[-1].baseid.startswith("tests/compat"):
        return "compat"
    return None


def xdist_group_of(item: pytest.Item) -> str | None:
    """The pytest-xdist group ``item`` runs in (with ``--dist loadgroup``), or None (any
    worker): a shared server's group, else its module's when it uses a fixture set up once
    per module (a server, a backup), which splitting the module would set up twice."""
    definitions = item._fixtureinfo.name2fixturedefs  # type: ignore[attr-defined]
    shared = _shared_server(definitions)
    if shared is not None:
        return shared
    for name in item.fixturenames:
        defs = definitions.get(name)
        if defs and defs[-1].scope in ("module", "package", "class"):
            return item.nodeid.split("::")[0]
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = xdist_group_of(item)
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))
