"""`strongroom serve --metrics-port`: Prometheus metrics on their own port, without a
token unless `metrics_token` asks for one; the API port answers probes without a token and
has no /metrics; a metrics port that cannot be used is one line at start."""

from __future__ import annotations

import secrets
import stat
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fixtures.live import free_port, start_server

SERVE = [sys.executable, "-m", "strongroom", "serve"]


def test_serve_exposes_metrics_on_their_own_port_without_a_token(tmp_path: Path) -> None:
    metrics_port = free_port()
    server = start_server(tmp_path / "data", "--metrics-port", str(metrics_port))
    try:
        r = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert r.status_code == 200
        names = {f.name for f in text_string_to_metric_families(r.text)}
        assert {"strongroom_backups", "strongroom_metadata_up", "strongroom_jobs_queued"} <= names
        # The API port: probes without a token, no metrics, everything else needs a token.
        assert httpx.get(f"{server.url}/healthcheck", timeout=10).text == "OK"
        assert httpx.get(f"{server.url}/readyz", timeout=10).json() == {
            "metadata": "ok",
            "stores": {"local": "ok"},
        }
        assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 404
        assert httpx.get(f"{server.url}/v1.0/admin/backups", timeout=10).status_code == 401
        # The metrics port serves nothing of the API.
        other = f"http://127.0.0.1:{metrics_port}/v1.0/admin/backups"
        assert httpx.get(other, timeout=10).status_code == 404
        private = tmp_path / "data" / "metrics" / f"serve-{metrics_port}"
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        assert server.admin_token not in r.text
    finally:
        assert server.stop() == 0


def test_a_metrics_token_is_needed_when_set_and_never_shown(tmp_path: Path) -> None:
    """Any local process reaches the listener, a tenant's managed server among them: with
    `metrics_token` set, a scrape without it, or with another, gets 401 and no series."""
    token = "mt-" + secrets.token_urlsafe(24)
    metrics_port = free_port()
    server = start_server(
        tmp_path / "data",
        "--metrics-port",
        str(metrics_port),
        env={"STRONGROOM_METRICS_TOKEN": token},
    )
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        for headers in ({}, {"Authorization": "Bearer " + token[:-1]}, {"Authorization": token}):
            refused = httpx.get(url, headers=headers, timeout=10)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "strongroom_" not in refused.text and token not in refused.text
        r = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200
        names = {f.name for f in text_string_to_metric_families(r.text)}
        assert "strongroom_backups" in names and token not in r.text
    finally:
        assert server.stop() == 0
    assert token not in server.log_path.read_text()


def test_a_metrics_port_in_use_or_equal_to_the_api_port_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    same = subprocess.run(
        [*SERVE, "--port", str(port), "--metrics-port", str(port), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert same.returncode != 0
    assert same.stderr.strip() == "strongroom: setting metrics_port: must differ from port"
    blocker = start_server(tmp_path / "d2", "--metrics-port", str(busy := free_port()))
    d3 = str(tmp_path / "d3")
    try:
        clash = subprocess.run(
            [*SERVE, "--port", str(free_port()), "--metrics-port", str(busy), "--data-dir", d3],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert clash.returncode != 0
        assert f"cannot listen for metrics on 127.0.0.1:{busy}" in clash.stderr
        assert len(clash.stderr.strip().splitlines()) == 1, clash.stderr
    finally:
        blocker.stop()
