import os

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
