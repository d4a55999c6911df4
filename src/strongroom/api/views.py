"""Wire views: domain objects → Trove's JSON shapes."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request

from strongroom.domain.model import (
    Backup,
    BackupCopy,
    BackupState,
    BackupStrategy,
    Datastore,
    DatastoreVersion,
    InstanceStatus,
    RequestContext,
)
from strongroom.domain.schedules import Schedule
from strongroom.services.datastores import DatastoreCatalog
from strongroom.services.instances import InstanceView
from strongroom.services.pitr import format_time
from strongroom.services.pitr_policy import PitrStatus
from strongroom.services.rules import Flavor
from strongroom.services.schedules import PruneResult


def timestamp(value: datetime | None) -> str | None:
    if not value:
        return None
    if value.tzinfo is not None:  # the metadata databases give naive UTC times already
        value = value.replace(tzinfo=None)
    return value.isoformat(timespec="seconds")


DEFAULT_PORTS = {"http": 80, "https": 443}


def base_url(request: Request) -> str:
    """Where links point: ``public_endpoint`` when set, else the scheme and the address
    the request reached the server on. Never the Host header, which the client writes."""
    endpoint: str | None = request.app.state.services.public_endpoint
    if endpoint:
        return endpoint.rstrip("/")
    scheme = str(request.scope.get("scheme") or "http")
    host, port = request.scope.get("server") or ("127.0.0.1", None)
    if ":" in host:
        host = f"[{host}]"
    if port is None or DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def backup_view(backup: Backup, catalog: DatastoreCatalog) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": backup.id,
        "name": backup.name,
        "description": backup.description,
        "locationRef": backup.location_ref,
        "instance_id": backup.instance_id,
        "created": timestamp(backup.created),
        "updated": timestamp(backup.updated),
        "size": backup.size_gb,
        "status": backup.state.value,
        "parent_id": backup.parent_id,
        "project_id": backup.project_id,
        "storage_driver": backup.store_name,
    }
    version = catalog.find_version(backup.datastore_version_id)
    if version is not None:
        view["datastore"] = {
            "type": version.datastore_name,
            "version": version.name,
            "version_id": version.id,
        }
    if backup.stored_bytes is not None:
        view["stored_bytes"] = backup.stored_bytes
    if backup.is_running and backup.state is not BackupState.NEW:
        view["progress"] = progress_view(backup)
    if backup.fail_reason and backup.state in (BackupState.FAILED, BackupState.DELETE_FAILED):
        view["fail_reason"] = backup.fail_reason
    if backup.schedule_id is not None:
        view["schedule_id"] = backup.schedule_id
    if backup.verification is not None:
        view["verify_status"] = backup.verification.status.value
        view["verified_at"] = timestamp(backup.verification.at)
        view["verify_error"] = backup.verification.error
    view["copies"] = [copy_view(c) for c in backup.copies]
    if backup.drill is not None:
        view["drill_status"] = backup.drill.status.value
        view["drilled_at"] = timestamp(backup.drill.at)
        view["drill_error"] = backup.drill.error
        view["drill_report"] = backup.drill.report
    return view


def copy_view(copy: BackupCopy) -> dict[str, Any]:
    """A copy in another store: its store's name and the copied manifest's URL, never the
    store's credentials."""
    view: dict[str, Any] = {
        "storage_driver": copy.store_name,
        "location_ref": copy.location_ref,
        "state": copy.state.value,
        "verified_at": timestamp(copy.verified_at),
    }
    if copy.error:
        view["error"] = copy.error
    return view


def progress_view(backup: Backup) -> dict[str, Any]:
    p = backup.progress
    percent = None
    if p.bytes_expected:
        percent = round(min(100.0, 100.0 * p.bytes_done / p.bytes_expected), 1)
    rate = None
    if p.started_at and p.updated_at and p.updated_at > p.started_at:
        rate = int(p.bytes_done / (p.updated_at - p.started_at).total_seconds())
    return {
        "bytes_done": p.bytes_done,
        "bytes_expected": p.bytes_expected,
        "percent": percent,
        "rate_bytes_per_second": rate,
    }


def next_link(request: Request, offset: int, limit: int) -> list[dict[str, str]]:
    """Trove's next link: the request's path under ``base_url``, marker replaced in place."""
    params = parse_qsl(request.url.query, keep_blank_values=True)
    marker = str(offset + limit)
    if any(k == "marker" for k, _ in params):
        params = [(k, marker if k == "marker" else v) for k, v in params]
    else:
        params.append(("marker", marker))
    href = f"{base_url(request)}{request.url.path}?{urlencode(params)}"
    return [{"rel": "next", "href": href}]


def strategy_view(strategy: BackupStrategy) -> dict[str, Any]:
    return {
        "project_id": strategy.project_id,
        "instance_id": strategy.instance_id,
        "backend": "swift",
        "swift_container": strategy.swift_container,
    }


def _links(request: Request, project_id: str, path: str) -> list[dict[str, str]]:
    base = base_url(request)
    return [
        {"href": f"{base}/v1.0/{project_id}/{path}", "rel": "self"},
        {"href": f"{base}/{path}", "rel": "bookmark"},
    ]


def version_view(
    request: Request, ctx: RequestContext, version: DatastoreVersion, *, with_datastore: bool
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": version.id,
        "name": version.name,
        "version": version.name,
        "links": _links(request, ctx.project_id, f"datastores/versions/{version.id}"),
    }
    if with_datastore:
        view["datastore"] = version.datastore_id
    if ctx.is_admin:
        view.update(
            active=version.active,
            packages="",
            image="",
            registry_ext="",
            repl_strategy="",
            image_tags=[],
        )
    return view


def datastore_view(request: Request, ctx: RequestContext, ds: Datastore) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": ds.id,
        "name": ds.name,
        "links": _links(request, ctx.project_id, f"datastores/{ds.id}"),
        "versions": [version_view(request, ctx, v, with_datastore=False) for v in ds.versions],
    }
    if ds.default_version_id:
        view["default_version"] = ds.default_version_id
    return view


def flavor_view(request: Request, ctx: RequestContext, flavor: Flavor) -> dict[str, Any]:
    return {
        "id": flavor.id,
        "str_id": flavor.id,
        "name": flavor.name,
        "ram": flavor.ram,
        "vcpus": flavor.vcpus,
        "disk": flavor.disk,
        "links": _links(request, ctx.project_id, f"flavors/{flavor.id}"),
    }


def instance_status(view: InstanceView) -> str:
    instance = view.instance
    if instance.task == "DELETING":
        return "SHUTDOWN"
    if view.backup_running and instance.task is None and instance.status is InstanceStatus.ACTIVE:
        return "BACKUP"
    return instance.status.value


def _address(host: Any) -> dict[str, Any]:
    """Where to connect, as Trove's view says it: ``ip`` (a list) for an address,
    ``hostname`` for a name; the port is in ``connection``."""
    if not isinstance(host, str) or not host:
        return {}
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return {"hostname": host}
    return {"ip": [host]}


def instance_view(
    request: Request, ctx: RequestContext, view: InstanceView, *, detail: bool
) -> dict[str, Any]:
    i = view.instance
    status = instance_status(view)
    body: dict[str, Any] = {
        "id": i.id,
        "name": i.name,
        "status": status,
        "operating_status": "" if i.task or status != "ACTIVE" else "HEALTHY",
        "links": _links(request, ctx.project_id, f"instances/{i.id}"),
        "flavor": {
            "id": i.flavor_id or "",
            "links": _links(request, ctx.project_id, f"flavors/{i.flavor_id or ''}"),
        },
        "datastore": {
            "type": view.version.datastore_name if view.version else None,
            "version": view.version.name if view.version else None,
        },
        "region": "RegionOne",
        "access": {"is_public": False},
        "kind": i.kind.value,
    }
    if i.volume_size is not None:
        body["volume"] = {"size": i.volume_size}
    if ctx.is_admin:
        body["tenant_id"] = i.project_id
    if i.public_connection is not None:
        body["connection"] = i.public_connection
        body.update(_address(i.public_connection.get("host")))
    if view.pitr is not None:
        body.update(pitr_view(view.pitr))
    body["last_restorable_backup_id"] = view.last_restorable_backup_id
    body["last_verified_restorable_at"] = timestamp(view.last_verified_restorable_at)
    if detail:
        body["created"] = timestamp(i.created)
        body["updated"] = timestamp(i.updated)
        body["service_status_updated"] = timestamp(i.updated)
        body["datastore"]["version_number"] = view.version.name if view.version else None
        if i.restore_backup_id:
            body["restore_point"] = {"backupRef": i.restore_backup_id}
        if i.fault:
            body["fault"] = {"message": i.fault, "created": timestamp(i.updated), "details": ""}
    return body


def pitr_view(status: PitrStatus) -> dict[str, Any]:
    """``restorable_window`` oldest first, its ends exact (see ``pitr.format_time``)."""
    return {
        "restorable_window": [
            {"from": format_time(span.start), "to": format_time(span.end)} for span in status.window
        ],
        "pitr": {
            "enabled": status.enabled,
            "last_archived_at": _utc(status.last_archived_at),
            "lag_seconds": status.lag_seconds,
        },
    }


def _utc(value: datetime | None) -> str | None:
    return format_time(value) if value else None


def schedule_view(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "project_id": schedule.project_id,
        **schedule.definition(),
        "created": timestamp(schedule.created),
        "updated": timestamp(schedule.updated),
        "next_run_at": timestamp(schedule.next_run_at),
        "next_drill_at": timestamp(schedule.next_drill_at),
        "last_run_at": timestamp(schedule.last_run_at),
        "last_backup_id": schedule.last_backup_id,
        "last_status": schedule.last_status.value if schedule.last_status else None,
        "last_error": schedule.last_error,
        "last_drill_at": timestamp(schedule.last_drill_at),
        "last_drill_backup_id": schedule.last_drill_backup_id,
        "last_drill_error": schedule.last_drill_error,
    }


def prune_view(result: PruneResult, *, dry_run: bool) -> dict[str, Any]:
    delete = []
    for d in result.plan.delete:
        entry: dict[str, Any] = {"id": d.backup_id, "reason": "; ".join(d.reasons)}
        if d.backup_id in result.errors:
            entry["error"] = result.errors[d.backup_id]
        delete.append(entry)
    keep = [{"id": d.backup_id, "reasons": list(d.reasons)} for d in result.plan.keep]
    return {"prune": {"dry_run": dry_run, "delete": delete, "keep": keep}}
