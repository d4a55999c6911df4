"""`strongroom schedule …` and `strongroom backup create|watch|verify|copy|drill`: HTTP clients
of a running service.

They talk to ``--url`` (the project endpoint, e.g. http://127.0.0.1:8779/v1.0/demo) with
``--token``; both default to OS_ENDPOINT and OS_TOKEN, as the OpenStack clients read them.
Results are printed as tables (``--json`` prints the response body instead)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

TIMEOUT = 30.0
RETENTION_COUNTS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


class ClientError(Exception):
    """A refusal from the service (its fault message) or no answer at all."""


class BackupFailedError(ClientError):
    """The backup watched ended FAILED (the message is its reason)."""


def _connect(args: argparse.Namespace) -> httpx.Client:
    if not args.url:
        raise ClientError("no endpoint: pass --url or set OS_ENDPOINT")
    if not args.token:
        raise ClientError("no token: pass --token or set OS_TOKEN")
    return httpx.Client(
        base_url=args.url.rstrip("/"),
        headers={"X-Auth-Token": args.token, "Accept": "application/json"},
        timeout=TIMEOUT,
    )


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    try:
        with _connect(args) as http:
            response = http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise ClientError(f"{args.url}: {exc}") from exc
    if response.status_code >= 400:
        try:
            (fault,) = response.json().values()
            message = fault["message"]
        except (ValueError, TypeError, KeyError, AttributeError):
            message = response.text[:500]
        raise ClientError(f"{response.status_code}: {message}")
    return response.json() if response.content else None


# -- rendering -------------------------------------------------------------------------------

SCHEDULE_COLUMNS = ("id", "name", "instance_id", "cron", "timezone", "next_run_at", "last_status")


def _table(title: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _fields(title: str, item: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=True)
    table.add_column("Field")
    table.add_column("Value", overflow="fold")
    for key in sorted(item):
        table.add_row(key, _cell(item[key]))
    return table


def _show(args: argparse.Namespace, body: Any, render: Callable[[Any], Table | None]) -> None:
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True))
        return
    table = render(body)
    if table is not None:
        Console(width=200).print(table)


# -- commands --------------------------------------------------------------------------------


def _definition(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "instance_id": args.instance,
        "name": args.name,
        "cron": args.cron,
        "timezone": args.timezone,
        "incremental": args.incremental,
        "full_every": args.full_every,
        "verify": args.verify,
    }
    for key in ("storage_driver", "swift_container", "drill_cron"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    retention: dict[str, Any] = {
        f"keep_{unit}": getattr(args, f"keep_{unit}")
        for unit in RETENTION_COUNTS
        if getattr(args, f"keep_{unit}") is not None
    }
    if args.keep_within is not None:
        retention["keep_within"] = args.keep_within
    if retention:
        spec["retention"] = retention
    if args.copy_to is not None:
        spec["copy_to"] = {"storage_driver": args.copy_to}
        if args.copy_container is not None:
            spec["copy_to"]["swift_container"] = args.copy_container
        copy_retention = {
            f"keep_{unit}": getattr(args, f"copy_keep_{unit}")
            for unit in RETENTION_COUNTS
            if getattr(args, f"copy_keep_{unit}") is not None
        }
        if copy_retention:
            spec["copy_retention"] = copy_retention
    return {"backup_schedule": spec}


def schedule_create(args: argparse.Namespace) -> None:
    body = _call(args, "POST", "/backup_schedules", json=_definition(args))
    _show(args, body, lambda b: _fields("backup schedule", b["backup_schedule"]))


def schedule_list(args: argparse.Namespace) -> None:
    params = {"instance_id": args.instance} if args.instance else None
    body = _call(args, "GET", "/backup_schedules", params=params)
    _show(
        args,
        body,
        lambda b: _table("backup schedules", SCHEDULE_COLUMNS, b["backup_schedules"]),
    )


def schedule_show(args: argparse.Namespace) -> None:
    body = _call(args, "GET", f"/backup_schedules/{args.schedule_id}")
    _show(args, body, lambda b: _fields("backup schedule", b["backup_schedule"]))


def schedule_delete(args: argparse.Namespace) -> None:
    _call(args, "DELETE", f"/backup_schedules/{args.schedule_id}")


def schedule_run(args: argparse.Namespace) -> None:
    body = _call(args, "POST", f"/backup_schedules/{args.schedule_id}/run")
    _show(args, body, lambda b: _fields("backup", b["backup"]))


def schedule_prune(args: argparse.Namespace) -> None:
    params = {"dry_run": "true"} if args.dry_run else None
    body = _call(args, "POST", f"/backup_schedules/{args.schedule_id}/prune", params=params)

    def render(b: dict[str, Any]) -> Table:
        prune = b["prune"]
        title = "prune (dry run: nothing deleted)" if prune.get("dry_run") else "prune"
        table = Table(title=title)
        for column in ("backup", "action", "why"):
            table.add_column(column, overflow="fold")
        for d in prune["keep"]:
            table.add_row(d["id"], "keep", ", ".join(d["reasons"]))
        for d in prune["delete"]:
            why = d["reason"] + (f" (not deleted: {d['error']})" if d.get("error") else "")
            table.add_row(d["id"], "delete", why)
        return table

    _show(args, body, render)


ENDED = ("COMPLETED", "FAILED", "DELETE_FAILED", "RESTORED")


def backup_create(args: argparse.Namespace) -> None:
    spec: dict[str, Any] = {"name": args.name, "instance": args.instance}
    if args.incremental:
        spec["incremental"] = 1
    if args.parent is not None:
        spec["parent_id"] = args.parent
    for key in ("description", "storage_driver", "swift_container"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    body = _call(args, "POST", "/backups", json={"backup": spec})
    if not args.wait:
        _show(args, body, lambda b: _fields("backup", b["backup"]))
        return
    _watch(args, body["backup"]["id"])


def backup_watch(args: argparse.Namespace) -> None:
    _watch(args, args.backup_id)


def _watch(args: argparse.Namespace, backup_id: str) -> None:
    """Poll the backup until it ends, drawing its progress: bytes, rate and ETA as the
    service measures them. COMPLETED returns; FAILED raises with the service's reason."""
    deadline = time.monotonic() + args.timeout if args.timeout else None
    console = Console(stderr=args.json)  # with --json only the final body goes to stdout
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=40),
        TaskProgressColumn(),
        DownloadColumn(binary_units=True),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(backup_id[:8], total=None, rate="-", eta="-", status="NEW")
        while True:
            backup = _call(args, "GET", f"/backups/{backup_id}")["backup"]
            _draw(bar, task, backup)
            if backup["status"] in ENDED:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise ClientError(f"backup {backup_id} still {backup['status']} after --timeout")
            time.sleep(args.interval)
    if args.json:
        print(json.dumps({"backup": backup}, indent=2, sort_keys=True))
    if backup["status"] != "COMPLETED":
        reason = backup.get("fail_reason") or "no reason given"
        raise BackupFailedError(f"backup {backup_id} {backup['status']}: {reason}")
    if not args.json:
        size = backup.get("stored_bytes")
        stored = f", {size} bytes stored" if size is not None else ""
        line = f"backup {backup_id} COMPLETED ({backup['name']}{stored})"
        console.print(line, markup=False, highlight=False)


def _draw(bar: Progress, task: Any, backup: dict[str, Any]) -> None:
    progress = backup.get("progress") or {}
    done = progress.get("bytes_done") or 0
    expected = progress.get("bytes_expected")
    rate = progress.get("rate_bytes_per_second")
    eta = "-"
    if rate and expected and expected > done:
        eta = _seconds(int((expected - done) / rate))
    if backup["status"] == "COMPLETED":
        done = expected = max(done, expected or 0, backup.get("stored_bytes") or 0, 1)
        eta = "0 s"
    bar.update(
        task,
        description=backup["name"][:40],
        total=expected,
        completed=done,
        rate=f"{_bytes(rate)}/s" if rate else "-",
        eta=eta,
        status=backup["status"],
    )


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _seconds(n: int) -> str:
    minutes, seconds = divmod(n, 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def backup_verify(args: argparse.Namespace) -> None:
    body = _call(args, "POST", f"/backups/{args.backup_id}/verify")
    _show(args, body, lambda b: _fields("backup", b["backup"]))


def backup_copy(args: argparse.Namespace) -> None:
    spec = {"storage_driver": args.to}
    if args.container is not None:
        spec["swift_container"] = args.container
    body = _call(args, "POST", f"/backups/{args.backup_id}/copy", json={"copy": spec})
    _show(args, body, lambda b: _fields("backup", b["backup"]))


def backup_drill(args: argparse.Namespace) -> None:
    body = _call(args, "POST", f"/backups/{args.backup_id}/drill")
    _show(args, body, lambda b: _fields("backup", b["backup"]))


# -- argparse --------------------------------------------------------------------------------


def _endpoint_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url",
        default=os.environ.get("OS_ENDPOINT"),
        help="the project endpoint, e.g. http://127.0.0.1:8779/v1.0/demo (OS_ENDPOINT)",
    )
    p.add_argument("--token", default=os.environ.get("OS_TOKEN"), help="API token (OS_TOKEN)")
    p.add_argument("--json", action="store_true", help="print the response body as JSON")


def _watch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    p.add_argument("--timeout", type=float, help="give up (exit 1) after this many seconds")


def _definition_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--instance", required=True, help="instance id")
    p.add_argument("--name", required=True, help="the schedule's name")
    p.add_argument(
        "--cron",
        required=True,
        help="5 fields, or 6 with seconds last ('0 3 * * * 30': 03:00:30); at most once "
        "a minute by default",
    )
    p.add_argument("--timezone", default="UTC", help="IANA zone the cron is read in")
    p.add_argument("--incremental", action="store_true", help="chain incrementals")
    p.add_argument("--full-every", type=int, default=7, help="a full backup every N runs")
    p.add_argument("--storage-driver", help="the store its backups go to")
    p.add_argument("--swift-container", help="the container its backups go to")
    p.add_argument("--verify", action="store_true", help="verify each backup once made")
    p.add_argument("--drill-cron", help="when to restore the newest backup as a drill")
    for unit in RETENTION_COUNTS:
        p.add_argument(f"--keep-{unit}", type=int, metavar="N", help=f"keep N {unit} backups")
    p.add_argument("--keep-within", metavar="DURATION", help="e.g. 7d, 36h, 1y6m")
    p.add_argument("--copy-to", metavar="STORE", help="copy each backup to this other store")
    p.add_argument("--copy-container", help="the container of the copies there")
    for unit in RETENTION_COUNTS:
        p.add_argument(
            f"--copy-keep-{unit}", type=int, metavar="N", help=f"keep N {unit} copies there"
        )


def _command(func: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            func(args)
        except BackupFailedError as exc:
            print(f"strongroom: {exc}", file=sys.stderr)
            return 2
        except ClientError as exc:
            print(f"strongroom: {exc}", file=sys.stderr)
            return 1
        return 0

    return run


def add_commands(sub: Any) -> None:
    """Register `schedule …` and `backup verify|drill` on the `strongroom` command's
    subparsers."""
    schedule = sub.add_parser("schedule", help="backup schedules of a running service")
    commands = schedule.add_subparsers(dest="schedule_command", required=True)
    p = commands.add_parser("create", help="create a backup schedule")
    _definition_options(p)
    _endpoint_options(p)
    p.set_defaults(func=_command(schedule_create))
    p = commands.add_parser("list", help="list backup schedules")
    p.add_argument("--instance", help="only this instance's schedules")
    _endpoint_options(p)
    p.set_defaults(func=_command(schedule_list))
    for name, func, text in (
        ("show", schedule_show, "show a schedule"),
        ("delete", schedule_delete, "delete a schedule (its backups stay)"),
        ("run", schedule_run, "run a schedule now"),
        ("prune", schedule_prune, "apply the schedule's retention policy"),
    ):
        p = commands.add_parser(name, help=text)
        p.add_argument("schedule_id", help="the schedule's id")
        if name == "prune":
            p.add_argument(
                "--dry-run", action="store_true", help="say what would go; delete nothing"
            )
        _endpoint_options(p)
        p.set_defaults(func=_command(func))

    backup = sub.add_parser("backup", help="backups of a running service")
    commands = backup.add_subparsers(dest="backup_command", required=True)
    p = commands.add_parser("create", help="create a backup (--wait: and watch it end)")
    p.add_argument("name", help="the backup's name")
    p.add_argument("--instance", required=True, help="instance id")
    p.add_argument("--incremental", action="store_true", help="a child of the newest backup")
    p.add_argument("--parent", help="the parent backup's id (with --incremental)")
    p.add_argument("--description", help="free text")
    p.add_argument("--storage-driver", help="the store to write it to")
    p.add_argument("--swift-container", help="the container to write it to")
    p.add_argument("--wait", action="store_true", help="show its progress until it ends")
    _watch_options(p)
    _endpoint_options(p)
    p.set_defaults(func=_command(backup_create))
    p = commands.add_parser("watch", help="show a backup's progress until it ends")
    p.add_argument("backup_id", help="the backup's id")
    _watch_options(p)
    _endpoint_options(p)
    p.set_defaults(func=_command(backup_watch))
    p = commands.add_parser("verify", help="read a backup back and check every object")
    p.add_argument("backup_id", help="the backup's id")
    _endpoint_options(p)
    p.set_defaults(func=_command(backup_verify))
    p = commands.add_parser("copy", help="copy a backup and its chain to another store")
    p.add_argument("backup_id", help="the backup's id")
    p.add_argument("--to", required=True, metavar="STORE", help="the store to copy it to")
    p.add_argument("--container", help="the container there (default: its own)")
    _endpoint_options(p)
    p.set_defaults(func=_command(backup_copy))
    p = commands.add_parser("drill", help="restore a backup into a throwaway instance and check it")
    p.add_argument("backup_id", help="the backup's id")
    _endpoint_options(p)
    p.set_defaults(func=_command(backup_drill))
