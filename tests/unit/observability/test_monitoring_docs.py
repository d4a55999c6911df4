"""docs/prometheus-rules.yml and docs/grafana-dashboard.json are valid and name only
metrics the service exposes."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from strongroom.domain.statistics import LastSuccess, ServiceStatistics
from strongroom.observability.collector import MetadataCollector
from strongroom.observability.telemetry import PrometheusTelemetry

DOCS = Path(__file__).resolve().parents[3] / "docs"
METRIC = re.compile(r"\bstrongroom_[a-z_]+\b")


class OneOfEach:
    def read(self, *, live_since: datetime) -> ServiceStatistics:
        at = datetime(2026, 1, 1)
        return ServiceStatistics(
            backups={("COMPLETED", "sqlite"): 1},
            last_success=[LastSuccess("i", "p", at)],
            jobs_running=1,
            jobs_queued=1,
            live_workers=["h1"],
            workers_seen={"h1": at},
        )

    def ping(self) -> None:
        pass


def exposed_names() -> set[str]:
    telemetry = PrometheusTelemetry()
    telemetry.backup_finished(datastore="sqlite", outcome="completed", seconds=1, read=1, stored=1)
    telemetry.restore_finished(datastore="sqlite", outcome="completed", seconds=1)
    telemetry.store_error(store="local", kind="StorageError")
    telemetry.schedule_run(outcome="started")
    telemetry.verification(result="OK")
    telemetry.job_started(kind="backup")
    assert telemetry.registry is not None
    metadata = CollectorRegistry()
    metadata.register(
        MetadataCollector(OneOfEach(), worker_alive_for=timedelta(minutes=1), now=datetime.now)
    )
    names: set[str] = set()
    for registry in (telemetry.registry, metadata):
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            names.update(sample.name for sample in family.samples)
    return names


def test_the_rules_file_parses_with_the_expected_alerts() -> None:
    rules = yaml.safe_load((DOCS / "prometheus-rules.yml").read_text())
    alerts = {r["alert"]: r for group in rules["groups"] for r in group["rules"]}
    assert {
        "StrongroomNoSuccessfulBackup",
        "StrongroomBackupFailed",
        "StrongroomVerifyCorrupt",
        "StrongroomWorkerDown",
    } <= set(alerts)
    assert "26 * 3600" in alerts["StrongroomNoSuccessfulBackup"]["expr"]
    exposed = exposed_names()
    for rule in alerts.values():
        assert set(METRIC.findall(rule["expr"])) <= exposed, rule["alert"]


def test_the_dashboard_loads_and_names_only_exposed_metrics() -> None:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    named = {name for expr in exprs for name in METRIC.findall(expr)}
    exposed = exposed_names()
    assert named <= exposed, named - exposed
    # Every family the service exposes has a panel.
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in exposed}
    shown = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in named}
    assert families <= shown, families - shown


def test_monitoring_doc_describes_every_metric() -> None:
    text = (DOCS / "monitoring.md").read_text()
    for name in exposed_names():
        base = re.sub(r"_(bucket|sum|count|created)$", "", name)
        assert base in text, base
