from __future__ import annotations

import os
from typing import Any

pytest_plugins = [
    "fixtures.service",
    "fixtures.live",
    "fixtures.swift",
    "fixtures.keystone",
    "fixtures.metadata",
]

# Many services start on this machine at once (here and in other test runs): the metrics
# listener of every process a test starts is off unless that test turns it on.
os.environ.setdefault("STRONGROOM_METRICS_PORT", "0")
# The suites name many containers ("far", "c1", "other_app"...): any name is allowed unless
# a test sets allowed_containers itself (tests/security/test_security_containers.py).
os.environ.setdefault("STRONGROOM_ALLOWED_CONTAINERS", '["*"]')

# How `make test` shares tests between its pytest-xdist workers (`--dist loadscope`): a
# module's tests run on one worker, one after another, so a module-scoped fixture (a server,
# a backup) is set up once and the tests that build on its state see it. The modules below
# share one worker further, each group for a session server that costs a lot to start
# (add a module that uses one of them here, or it starts its own).
SHARED_SCOPES = {
    # Keystone and a keystone-mode Swift (fixtures.keystone)
    "tests/integration/keystone/test_keystone_tokens.py": "keystone",
    "tests/integration/storage/test_storage_keystone.py": "keystone",
    "tests/compat/test_keystone_accounts.py": "keystone",
    "tests/compat/test_keystone_catalog.py": "keystone",
    "tests/security/test_security_keystone_flood.py": "keystone",
    # `strongroom serve` and a scaled-out cluster (tests/compat/conftest.py: live_server)
    "tests/compat/test_openstack_cli.py": "compat",
    "tests/compat/test_troveclient.py": "compat",
}


def scope_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or its module's shared group."""
    module = nodeid.split("::", 1)[0]
    return SHARED_SCOPES.get(module, module)


def pytest_xdist_make_scheduler(config: Any, log: Any) -> Any:
    """``--dist loadscope`` by :func:`scope_of` (pytest-xdist's ``loadgroup`` cannot be used:
    it marks a group in the node id, which pytest 9.2 no longer lets it change)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedScopes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return SharedScopes(config, log)
