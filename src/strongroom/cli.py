"""Strongroom: database backups behind the OpenStack Trove Backups API.

`strongroom serve` runs the API and the backup workers in one process; `strongroom api`
and `strongroom worker` run them scaled out. Settings come from the options, STRONGROOM_*
environment variables and a TOML file (--config); see the README."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from strongroom import logformat
from strongroom.allocator import freeze_startup_objects, keep_chunk_buffers_in_heap

if TYPE_CHECKING:
    import socket

    from pydantic import ValidationError

    from strongroom.api.edge import EdgeSettings
    from strongroom.bootstrap import Container
    from strongroom.config import Settings
    from strongroom.observability.listener import MetricsListener
    from strongroom.services.tokens import TokenService

ADMIN_PROJECT = "admin"
ADMIN_TOKEN_FILE = "admin-token"


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment and config, with command-line values on top. A bad
    setting ends the command with one line naming it."""
    import tomllib

    from pydantic import ValidationError

    from strongroom.config import Settings

    overrides: dict[str, Any] = {}
    config_file = getattr(args, "config", None)
    if config_file is not None:
        if not config_file.is_file():
            raise SystemExit(f"strongroom: no such config file: {config_file}")
        os.environ["STRONGROOM_CONFIG"] = str(config_file.absolute())
    for name in ("host", "port", "data_dir", "metrics_port"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "sqlite_root", None):
        overrides["sqlite_roots"] = args.sqlite_root
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SystemExit(f"strongroom: {setting_problem(exc)}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SystemExit(
            f"strongroom: config file {os.environ.get('STRONGROOM_CONFIG')}: {exc}"
        ) from None


def setting_problem(exc: ValidationError) -> str:
    """The first problem of a settings error as one line: the setting, what is wrong."""
    first = exc.errors()[0]
    # A store entry's wrong kind is reported at the entry; the setting is its ``kind``.
    discriminator = first.get("ctx", {}).get("discriminator")
    where = ".".join(str(p) for p in (*first["loc"], discriminator) if p is not None)
    message = first["msg"].removeprefix("Value error, ")
    more = exc.error_count() - 1
    tail = f" (and {more} more)" if more else ""
    if not where:
        return f"configuration: {message}{tail}"
    given = first.get("input")
    if isinstance(given, dict):  # a whole table (a store's, with its secrets): not shown
        return f"setting {where}: {message}{tail}"
    return f"setting {where}: {message} (got {given!r:.60}){tail}"


def _first_admin_token(tokens: TokenService, data_dir: Path) -> None:
    """Make the first admin token. On a terminal it is shown; otherwise (stdout is a log:
    a service manager, a pipe) it goes to a file only its owner reads, and the log gets
    the file's path."""
    if not tokens.is_empty():
        return
    issued = tokens.create(project_id=ADMIN_PROJECT, user_id="admin", roles=("admin",))
    if sys.stdout.isatty():
        print(
            "Created the first admin token (shown once; keep it safe):\n"
            f"  project: {ADMIN_PROJECT}\n  token:   {issued.token}",
            flush=True,
        )
        return
    path = data_dir / ADMIN_TOKEN_FILE
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(issued.token + "\n")
    print(
        f"Created the first admin token (project {ADMIN_PROJECT}) in {path} "
        "(readable by its owner only; move it somewhere safe)",
        flush=True,
    )


def _exit_cleanly(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _metrics_address(settings: Settings) -> tuple[str, int] | None:
    """Where the metrics listener goes, or None when it is off (metrics_port = 0)."""
    if not settings.metrics_port:
        return None
    host = settings.metrics_host or settings.host
    if settings.metrics_port == settings.port and host == settings.host:
        raise SystemExit("strongroom: setting metrics_port: must differ from port")
    return host, settings.metrics_port


def _prepare_metrics(settings: Settings, role: str) -> tuple[str, int] | None:
    """Before prometheus_client is imported: the private multi-process directory."""
    from strongroom.observability.multiprocess import MetricsDirError, prepare

    address = _metrics_address(settings)
    if address is not None:
        try:
            prepare(settings.data_dir, role=role, port=address[1])
        except MetricsDirError as exc:
            raise SystemExit(f"strongroom: metrics: {exc}") from None
    return address


def _bind_metrics(address: tuple[str, int] | None, settings: Settings) -> MetricsListener | None:
    """The metrics listener, bound (not yet serving), or None; a port that cannot be used
    ends the command with one line, before anything starts."""
    if address is None:
        return None
    from strongroom.observability.listener import MetricsListener

    try:
        token = settings.metrics_token
        return MetricsListener(
            address[0], address[1], token=token.get_secret_value() if token else None
        )
    except OSError as exc:
        raise SystemExit(
            f"strongroom: cannot listen for metrics on {address[0]}:{address[1]}: "
            f"{exc.strerror or exc} (setting metrics_port; 0 turns it off)"
        ) from None


def _hold_data_dir(settings: Settings) -> bool:
    """Mark the data dir as in use by a running service (see ``service_lock``); False,
    with the reason printed, while an offline command holds it."""
    from strongroom.service_lock import OfflineCommandRunningError, hold_shared

    try:
        hold_shared(settings.data_dir)
    except (OfflineCommandRunningError, OSError) as exc:
        print(f"strongroom: cannot start: {exc}", file=sys.stderr)
        return False
    return True


def _stop_listening(listeners: list[socket.socket], metrics: MetricsListener | None) -> int:
    for listener in listeners:
        listener.close()
    if metrics is not None:
        metrics.close()
    return 1


def serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    metrics_address = _prepare_metrics(settings, "serve")

    from strongroom.api.app import create_app
    from strongroom.api.server import serve_app
    from strongroom.bootstrap import StartupError, build, edge_settings, metrics_registry

    workers = args.workers or 1
    bound = _bind(settings, metrics_address, workers)
    if bound is None:
        return 1
    listeners, metrics = bound
    if not _hold_data_dir(settings):  # after the port: a busy port leaves nothing made
        return _stop_listening(listeners, metrics)
    try:
        container = build(settings)
    except StartupError as exc:
        return _cannot_start(exc, listeners, metrics)
    if metrics is not None:
        metrics.serve(metrics_registry(container))
    _first_admin_token(container.services.tokens, settings.data_dir)
    print(
        f"Strongroom serving on http://{settings.host}:{settings.port} "
        f"(data dir {settings.data_dir})",
        flush=True,
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal to the
    # handler it found: make that handler a clean exit, so the worker pool is shut down too.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    edge = edge_settings(settings)
    try:
        if workers > 1:
            served = _serve_in_processes(settings, container, listeners, edge)
        else:
            app = create_app(container.services, edge)
            freeze_startup_objects()
            served = serve_app(app, listener=listeners[0], edge=edge)
    finally:
        if metrics is not None:
            metrics.close()
        container.close()
    return 0 if served else 2  # why it did not start is logged


def _bind(
    settings: Settings, metrics_address: tuple[str, int] | None, processes: int
) -> tuple[list[socket.socket], MetricsListener | None] | None:
    """The API's sockets (one per serving process) and the metrics listener, bound before
    anything starts; None (the reason printed) when the API's port cannot be used."""
    from strongroom.api.server import ListenError, listen

    try:
        listeners = listen(settings.host, settings.port, processes)
    except ListenError as exc:
        print(f"strongroom: {exc}", file=sys.stderr)
        return None
    try:
        return listeners, _bind_metrics(metrics_address, settings)
    except SystemExit:
        _stop_listening(listeners, None)
        raise


def _cannot_start(
    exc: Exception, listeners: list[socket.socket], metrics: MetricsListener | None
) -> int:
    _stop_listening(listeners, metrics)
    print(f"strongroom: cannot start: {exc}", file=sys.stderr)
    return 2


def _serve_in_processes(
    settings: Settings,
    container: Container,
    listeners: list[socket.socket],
    edge: EdgeSettings,
) -> bool:
    """`serve --workers N`: N API processes, one per listener; this process runs
    the jobs (its in-process pool), the scheduler and the recovery of interrupted jobs,
    once, and receives the jobs the API processes submit (``jobs.handoff``); a job whose
    hand-off was lost runs after ``redispatch_after_seconds``."""
    import json
    from datetime import timedelta

    from strongroom.api.server import serve_workers
    from strongroom.jobs.handoff import ENV, JobInbox, Redelivery
    from strongroom.jobs.inprocess import InProcessJobQueue
    from strongroom.services.clock import SystemClock
    from strongroom.services.periodic import Periodic

    queue = container.queue
    assert isinstance(queue, InProcessJobQueue)
    inbox = JobInbox.in_data_dir(settings.data_dir, queue)
    inbox.start()
    after = settings.redispatch_after_seconds
    redelivery = Periodic(
        Redelivery(
            uow=container.uow, clock=SystemClock(), queue=queue, after=timedelta(seconds=after)
        ).run_once,
        interval=after,
        name="job-redelivery",
        log=logging.getLogger("strongroom.jobs"),
        failure="redelivery of stranded jobs failed",
    )
    redelivery.start()
    _export(settings)
    os.environ[ENV] = str(inbox.path)
    os.environ["STRONGROOM_SQLITE_ROOTS"] = json.dumps(
        [a.model_dump() for a in settings.sqlite_roots]
    )
    try:
        return serve_workers("strongroom.asgi:create_serving", listeners=listeners, edge=edge)
    finally:
        redelivery.stop()
        inbox.close()


def _export(settings: Settings) -> None:
    """Pass command-line values to child processes through the environment."""
    os.environ["STRONGROOM_DATA_DIR"] = str(settings.data_dir)
    os.environ["STRONGROOM_HOST"] = settings.host
    os.environ["STRONGROOM_PORT"] = str(settings.port)
    os.environ["STRONGROOM_METRICS_PORT"] = str(settings.metrics_port)


def api(args: argparse.Namespace) -> int:
    """Only the API, in several processes; jobs go to the broker. This process serves
    the metrics of all of them."""
    settings = _settings(args)
    metrics_address = _prepare_metrics(settings, "api")

    from strongroom.api.server import serve_workers
    from strongroom.bootstrap import (
        StartupError,
        build_api_metrics,
        build_tokens,
        edge_settings,
        master_key,
        preflight,
    )

    workers = args.workers or settings.api_workers
    bound = _bind(settings, metrics_address, workers)
    if bound is None:
        return 1
    listeners, metrics = bound
    if not _hold_data_dir(settings):
        return _stop_listening(listeners, metrics)
    try:
        preflight(settings, "api")  # before anything is made in its metadata
        master_key(settings)  # each API process loads it; a bad one stops them all alike
        tokens = build_tokens(settings)
    except StartupError as exc:
        return _cannot_start(exc, listeners, metrics)
    _first_admin_token(tokens, settings.data_dir)
    _export(settings)
    if metrics is not None:
        metrics.serve(build_api_metrics(settings))
    print(
        f"Strongroom API serving on http://{settings.host}:{settings.port} ({workers} processes)",
        flush=True,
    )
    try:
        served = serve_workers(
            "strongroom.asgi:create",
            listeners=listeners,
            edge=edge_settings(settings),
        )
    finally:
        if metrics is not None:
            metrics.close()
    return 0 if served else 2  # each process printed why it did not start


def worker(args: argparse.Namespace) -> int:
    """Run this host's jobs (and shared ones) from the broker; reap dead workers' jobs."""
    import threading

    settings = _settings(args)
    if args.host_id:
        settings.host_id = args.host_id
    if not _hold_data_dir(settings):
        return 2
    metrics_address = _prepare_metrics(settings, "worker")

    from strongroom.bootstrap import StartupError, build, metrics_registry
    from strongroom.jobs.celery_queue import CeleryJobQueue, run_worker

    metrics = _bind_metrics(metrics_address, settings)
    try:
        container = build(settings, role="worker")
    except StartupError as exc:
        if metrics is not None:
            metrics.close()
        print(f"strongroom: cannot start: {exc}", file=sys.stderr)
        return 2
    if metrics is not None:
        metrics.serve(metrics_registry(container))
    queue = container.queue
    assert isinstance(queue, CeleryJobQueue)
    stop = threading.Event()

    def keep_alive() -> None:
        while not stop.wait(settings.reaper_interval_seconds):
            try:
                container.reaper.beat(settings.host_id)
                container.reaper.reap()
            except Exception:
                logging.getLogger("strongroom.worker").exception("reaper pass failed")

    threading.Thread(target=keep_alive, name="reaper", daemon=True).start()
    calls = container.account_calls
    if calls is not None:
        calls.start()
    print(f"Strongroom worker for host {settings.host_id!r} started", flush=True)
    try:
        run_worker(
            queue.app,
            prefix=queue.prefix,
            host_id=settings.host_id,
            run=container.handlers.run,
            concurrency=args.concurrency or settings.worker_concurrency,
        )
    finally:
        stop.set()
        if calls is not None:
            calls.stop()
        if metrics is not None:
            metrics.close()
        container.stores.close()
    return 0


def check(args: argparse.Namespace) -> int:
    """Report (and with --fix remove) objects no backup refers to; exit 1 when not clean."""
    from strongroom.bootstrap import StartupError, build_checker

    try:
        checker = build_checker(_settings(args))
    except StartupError as exc:
        print(f"strongroom: cannot check: {exc}", file=sys.stderr)
        return 2
    report = checker.run(fix=args.fix)
    for store, keys in sorted(report.orphaned.items()):
        for key in keys:
            print(f"orphaned object: {store}:{key}")
    for name, why in sorted(report.unverified.items()):
        print(f"kept, not verified as this service's: {name}: {why}")
    for name in report.metadata_backups:
        print(f"kept, the service's metadata backup: {name}")
    for store, keys in sorted(report.stale_temporary.items()):
        for key in keys:
            print(f"stale temporary object: {store}:{key}")
    for backup_id in report.missing_manifests:
        print(f"completed backup without its manifest: {backup_id}")
    for backup_id in report.stuck:
        print(f"running backup with no job: {backup_id}")
    for store, problem in sorted(report.unreachable.items()):
        print(f"store not checked: {store}: {problem}")
    if args.fix:
        for name in report.removed_keys:
            print(f"removed: {name}")
        for name, problem in sorted(report.not_removed.items()):
            print(f"not removed: {name}: {problem}")
        print(f"removed {report.removed} orphaned objects")
        unresolved = (
            report.unverified or report.missing_manifests or report.stuck or report.unreachable
        )
        return 1 if unresolved or report.not_removed else 0
    if report.clean:
        print("consistent: every stored object belongs to a backup")
    return 0 if report.clean else 1


def check_read_data(args: argparse.Namespace) -> int:
    """`check --read-data`: read every completed backup back (its chain, every chunk
    authenticated and decompressed); exit 1 unless all are OK."""
    from strongroom.bootstrap import StartupError, build_verifier

    try:
        verifier = build_verifier(_settings(args))
    except StartupError as exc:
        print(f"strongroom: cannot check: {exc}", file=sys.stderr)
        return 2
    results = verifier.verify_completed()
    for backup, verification in results:
        detail = f": {verification.error}" if verification.error else ""
        print(f"backup {backup.id} ({backup.name}): {verification.status}{detail}")
    failed = [b for b, v in results if v.status != "OK"]
    print(f"read back {len(results)} completed backups, {len(failed)} not OK")
    return 1 if failed else 0


def check_with_read_data(args: argparse.Namespace) -> int:
    code = check(args)
    if args.read_data:
        code = max(code, check_read_data(args))
    return code


def db_upgrade(args: argparse.Namespace) -> int:
    from strongroom.bootstrap import upgrade_schema

    upgrade_schema(_settings(args))
    print("metadata database is at the current schema")
    return 0


def parser(argv: Sequence[str] | None = ()) -> argparse.ArgumentParser:
    """The command line's parser; with ``argv``, only the commands it can name (see
    :data:`COMMAND_MODULES`). The default, ``()``, has every command."""
    top = argparse.ArgumentParser(
        prog="strongroom",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action=_Version, help="show the version and exit")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir",
            type=Path,
            metavar="DIR",
            help="metadata database, master key, local objects, managed instances "
            "(default: var/data; setting data_dir)",
        )
        p.add_argument(
            "--config", type=Path, metavar="FILE", help="TOML settings file (see the README)"
        )

    def address(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
        p.add_argument("--port", type=int, help="port to listen on (default: 8779)")
        metrics_port(p)

    def metrics_port(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="Prometheus /metrics on its own port, on the service's address "
            "(default: 9779; 0: off; setting metrics_port)",
        )

    p = sub.add_parser("serve", help="run the API and the workers in one process")
    address(p)
    common(p)
    p.add_argument(
        "--sqlite-root",
        type=Path,
        action="append",
        metavar="DIR",
        help="directory under which external SQLite files may be registered (repeatable)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="API processes (default 1: the API in this process); the jobs and the "
        "scheduler stay in this process",
    )
    p.set_defaults(func=serve)

    p = sub.add_parser("api", help="scaled out: run only the API, in several processes")
    address(p)
    p.add_argument(
        "--workers", type=int, metavar="N", help="API processes (default: setting api_workers)"
    )
    common(p)
    p.set_defaults(func=api)

    p = sub.add_parser("worker", help="scaled out: run the jobs of one database host")
    p.add_argument("--host-id", metavar="ID", help="this host's id (default: setting host_id)")
    p.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="jobs run at once (default: setting worker_concurrency)",
    )
    metrics_port(p)
    common(p)
    p.set_defaults(func=worker)

    p = sub.add_parser("check", help="compare the metadata with the stores; find orphans")
    p.add_argument("--fix", action="store_true", help="remove orphaned objects")
    p.add_argument(
        "--read-data", action="store_true", help="also read back and verify every completed backup"
    )
    common(p)
    p.set_defaults(func=check_with_read_data)

    db = sub.add_parser("db", help="metadata database").add_subparsers(
        dest="db_command", required=True, metavar="COMMAND"
    )
    p = db.add_parser("upgrade", help="apply schema migrations")
    common(p)
    p.set_defaults(func=db_upgrade)

    wanted = _command_modules(argv)
    adders: dict[str, Callable[[], None]] = {
        "strongroom.token_commands": lambda: _module("token_commands").add_commands(
            sub, _settings, common
        ),
        "strongroom.client": lambda: _module("client").add_commands(sub),
        "strongroom.offline.commands": lambda: _module("offline.commands").add_commands(
            sub, _settings
        ),
        "strongroom.keystone_catalog": lambda: _module("keystone_catalog").add_commands(sub),
        "strongroom.metadata_commands": lambda: _module("metadata_commands").add_commands(
            sub, _settings
        ),
    }
    for name, add in adders.items():
        if name in wanted:
            add()
    return top


# The commands other modules add to the parser, by module. A command line names one of
# them, and only its module is imported: `strongroom restore` does not load the HTTP
# client, the metadata database or the API (tests/unit/test_cli_imports.py keeps this
# table in step with what each module adds).
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "strongroom.token_commands": ("token",),
    "strongroom.client": ("backup", "schedule"),
    "strongroom.offline.commands": ("restore", "ls", "key", "catalog"),
    "strongroom.keystone_catalog": ("keystone",),
    "strongroom.metadata_commands": ("metadata",),
}
OWN_COMMANDS = ("serve", "api", "worker", "check", "db")


def _command_modules(argv: Sequence[str] | None) -> set[str]:
    """The modules whose commands the parser needs for ``argv``: all of them unless its
    first argument names a command (then none, or that command's module)."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = args[0] if args else ""
    if command in OWN_COMMANDS:
        return set()
    for name, commands in COMMAND_MODULES.items():
        if command in commands:
            return {name}
    return set(COMMAND_MODULES)  # --help, --version, a mistake: the whole list


def _module(name: str) -> Any:
    return importlib.import_module(f"strongroom.{name}")


class _Version(argparse.Action):
    """``--version``, with the installed version looked up only when it is asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        from importlib.metadata import version

        print(f"strongroom {version('strongroom')}")
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    keep_chunk_buffers_in_heap()
    logformat.configure()
    args = parser(argv).parse_args(argv)
    try:
        code: int = args.func(args)
    except Exception as exc:
        # A wrong database_url, a server that refuses, a directory that cannot be made.
        # (Only a command that loaded the metadata database can raise its errors.)
        sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
        if sqlalchemy_exc is None or not isinstance(exc, sqlalchemy_exc.SQLAlchemyError):
            raise
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        print(f"strongroom: metadata database (setting database_url): {reason}", file=sys.stderr)
        return 2
    # The command is done: what remains is the interpreter's exit, whose last garbage
    # collection would walk every object the imports made (55,000 after a restore, about
    # 30 ms here). Nothing left needs collecting: exit without it.
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(main())
