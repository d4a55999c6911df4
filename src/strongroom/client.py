"""`strongroom schedule …` and `strongroom backup verify|drill`: HTTP clients of a running
service.

They talk to ``--url`` (the project endpoint, e.g. http://127.0.0.1:8779/v1.0/demo) with
``--token``; both default to OS_ENDPOINT and OS_TOKEN, as the OpenStack clients read them.
Results are printed as tables (``--json`` prints the response body instead)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

TIMEOUT = 30.0
RETENTION_COUNTS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


class ClientError(Exception):
    """A refusal from the service (its fault message) or no answer at all."""


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


def backup_verify(args: argparse.Namespace) -> None:
    body = _call(args, "POST", f"/backups/{args.backup_id}/verify")
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


def _definition_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--instance", required=True, help="instance id")
    p.add_argument("--name", required=True, help="the schedule's name")
    p.add_argument(
        "--cron", required=True, help="5 fields, or 6 with seconds last ('* * * * * */10')"
    )
    p.add_argument("--timezone", default="UTC", help="IANA zone the cron is read in")
    p.add_argument("--incremental", action="store_true", help="chain incrementals")
    p.add_argument("--full-every", type=int, default=7, help="a full backup every N runs")
    p.add_argument("--storage-driver", help="the store the backups go to (default: the service's)")
    p.add_argument("--swift-container", help="the container the backups go to")
    p.add_argument("--verify", action="store_true", help="verify each backup once made")
    p.add_argument("--drill-cron", help="when to restore-drill the newest backup (cron)")
    for unit in RETENTION_COUNTS:
        p.add_argument(
            f"--keep-{unit}",
            type=int,
            metavar="N",
            help=f"retention: keep {unit.replace('_', ' ')}",
        )
    p.add_argument("--keep-within", metavar="DURATION", help="e.g. 7d, 36h, 1y6m")


def _command(func: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            func(args)
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
    p = commands.add_parser("verify", help="read a backup back and check every object")
    p.add_argument("backup_id", help="the backup's id")
    _endpoint_options(p)
    p.set_defaults(func=_command(backup_verify))
    p = commands.add_parser("drill", help="restore a backup into a throwaway instance and check it")
    p.add_argument("backup_id", help="the backup's id")
    _endpoint_options(p)
    p.set_defaults(func=_command(backup_drill))
