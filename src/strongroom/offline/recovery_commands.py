"""`strongroom catalog rebuild` and `strongroom key rotate`: the metadata database rebuilt
from a store's manifests, and the master key changed under every manifest. Both run
while the service is stopped."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from strongroom.pipeline.errors import FormatError
from strongroom.pipeline.keys import MasterKey, rotation_journal
from strongroom.service_lock import ServiceRunningError, service_stopped
from strongroom.services import object_layout
from strongroom.storage.errors import StorageError

# What only the commands themselves use (the metadata database, the rebuild, the
# rotation) is imported when one runs: the parser is built for every command line, a
# restore's too.
if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from strongroom.config import Settings
    from strongroom.domain.ports import UnitOfWorkFactory
    from strongroom.offline.rotation import StoreToRotate
    from strongroom.services.stores import StoreCatalog

SettingsOf = Callable[[argparse.Namespace], "Settings"]
Command = Callable[[argparse.Namespace, "Settings"], int]
TROUBLE = 2


def _say(line: str) -> None:
    print(line, flush=True)


def _open(
    settings: Settings,
) -> tuple[MasterKey, sessionmaker[Session], UnitOfWorkFactory, StoreCatalog]:
    from strongroom.bootstrap import build_recovery

    master = MasterKey.load(settings.key_file)
    sessions, uow, stores = build_recovery(settings, master)
    return master, sessions, uow, stores


def alone(command: Command) -> Command:
    """``command`` run with no service on its data dir: refused while a service process on
    this host holds the data dir (``service_lock``) or a worker elsewhere beat recently."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            with service_stopped(settings.data_dir):
                return command(args, settings)
        except (ServiceRunningError, OSError) as exc:
            print(f"strongroom: {exc}", file=sys.stderr)
            return TROUBLE

    return run


def workers_alive(uow: UnitOfWorkFactory, settings: Settings) -> bool:
    """True, with the hosts printed, when a worker beat within its lease: it may be
    running jobs with what the command is about to change."""
    from strongroom.services.clock import SystemClock

    since = SystemClock().now() - timedelta(seconds=settings.job_lease_seconds)
    with uow() as u:
        hosts = u.workers.live(since)
    if hosts:
        print(
            f"strongroom: workers are running ({', '.join(hosts)}): stop them first "
            f"(a stopped worker is no longer counted {settings.job_lease_seconds:.0f} s "
            "after its last heartbeat)",
            file=sys.stderr,
        )
    return bool(hosts)


def catalog_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from strongroom.bootstrap import StartupError
    from strongroom.offline.catalog import rebuild

    if rotation_journal(settings.key_file).exists():
        print("strongroom: a master key rotation is unfinished: run `strongroom key rotate`")
        return TROUBLE
    try:
        master, sessions, uow, stores = _open(settings)
    except (StartupError, OSError, ValueError) as exc:
        print(f"strongroom: cannot open the metadata, stores or master key: {exc}", file=sys.stderr)
        return TROUBLE
    if workers_alive(uow, settings):
        stores.close()
        return TROUBLE
    if args.store not in stores.names():
        print(f"strongroom: no store named {args.store!r}", file=sys.stderr)
        stores.close()
        return TROUBLE
    containers = args.container or [settings.default_container]
    if not _containers_allowed(stores, [args.store], containers):
        stores.close()
        return TROUBLE
    try:
        report = rebuild(
            store_name=args.store,
            store=stores.backend(args.store),
            containers=containers,
            key=master,
            uow=uow,
            sessions=sessions,
            host=settings.host_id,
        )
    except StorageError as exc:
        print(f"strongroom: catalog rebuild: the store failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stores.close()
    for key, reason in sorted(report.skipped.items()):
        print(f"skipped {args.store}:{key}: {reason}")
    for backup_id in report.not_tenant:
        print(f"not imported: {backup_id} is the service's own metadata backup")
    print(
        f"imported {len(report.imported)} backups and {len(report.instances)} detached "
        f"instances from {args.store} ({', '.join(containers)}); "
        f"{len(report.present)} were already recorded, {len(report.skipped)} skipped"
    )
    return 1 if report.skipped else 0


def _targets(
    uow: UnitOfWorkFactory, stores: StoreCatalog, settings: Settings, extra: list[str]
) -> dict[str, StoreToRotate]:
    """Every container of every store the metadata knows backups in (and the default
    one, and ``extra``), with the containers of ``restore_from`` registrations, of copies
    and of point-in-time archives; and the manifest key of every backup, copy and archived
    log batch the metadata records."""
    from strongroom.domain.model import BackupState
    from strongroom.domain.ports import BackupQuery
    from strongroom.offline.rotation import StoreToRotate
    from strongroom.services.leftovers import containers_in_use

    with uow() as u:
        backups = u.backups.query(BackupQuery())
        backups += u.backups.in_states([BackupState.DELETING])
        policies = u.pitr.policies()
        batches = u.pitr.all_batches()
        copies = u.copies.every()
    found = containers_in_use(backups, stores.names(), settings.default_container)
    known: dict[str, set[str]] = {name: set() for name in found}
    for name in found:
        found[name].update(extra)
    for b in backups:
        if not b.location_ref:
            continue
        try:
            name, _backend, key = stores.locate(b.location_ref)
        except (StorageError, ValueError):
            continue
        found.setdefault(name, set()).add(object_layout.container_of(key))
        known.setdefault(name, set()).add(key)
    # Copies in other stores: their containers, and each written copy's manifest.
    for copy in copies:
        found.setdefault(copy.store_name, set()).add(copy.container)
        known.setdefault(copy.store_name, set()).add(
            object_layout.manifest_key(copy.container, copy.backup_id)
        )
    # Point-in-time archives: the policies' containers, and each recorded batch's manifest.
    for policy in policies:
        found.setdefault(policy.store_name, set()).add(policy.container)
    for batch in batches:
        found.setdefault(batch.store_name, set()).add(batch.container)
        known.setdefault(batch.store_name, set()).add(
            object_layout.archive_manifest_key(batch.container, batch.instance_id, batch.id)
        )
    return {
        name: StoreToRotate(stores.backend(name), sorted(containers), sorted(known.get(name, ())))
        for name, containers in found.items()
    }


def _containers_allowed(stores: StoreCatalog, names: list[str], containers: list[str]) -> bool:
    """Each container named on the command line follows the store's naming rules (no
    ``..``, no ``/``: a container never reaches outside the store)."""
    for name in names:
        for container in containers:
            if "/" in container or not stores.container_allowed(name, container):
                print(f"strongroom: {container!r} is not a container of store {name!r}")
                return False
    return True


def key_rotate(args: argparse.Namespace, settings: Settings) -> int:
    from strongroom.bootstrap import StartupError
    from strongroom.offline.rotation import RotationError, rotate

    try:
        _master, sessions, uow, stores = _open(settings)
    except (StartupError, OSError, ValueError) as exc:
        print(f"strongroom: cannot open the metadata, stores or master key: {exc}", file=sys.stderr)
        return TROUBLE
    if workers_alive(uow, settings) or not _containers_allowed(
        stores, stores.names(), args.container or []
    ):
        stores.close()
        return TROUBLE
    try:
        report = rotate(
            key_file=settings.key_file,
            stores=_targets(uow, stores, settings, args.container or []),
            sessions=sessions,
            say=_say,
        )
    except (RotationError, StorageError, FormatError, OSError, ValueError) as exc:
        print(
            f"strongroom: key rotation stopped: {exc}\nthe old key is kept; run "
            "`strongroom key rotate` again to continue",
            file=sys.stderr,
        )
        return 1
    finally:
        stores.close()
    if report.old_key_id == report.new_key_id:
        print(f"finished the interrupted rotation: the master key is {report.new_key_id}")
        return 0
    for where, why in sorted(report.problems.items()):
        print(f"not rewritten: {where}: {why}")
    print(
        f"master key is now {report.new_key_id} (was {report.old_key_id}): "
        f"{len(report.rewritten)} manifests rewritten, {report.already} already under it, "
        f"{report.resealed} sealed values and {report.repinned} registrations updated"
    )
    return 1 if report.problems else 0


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], settings_of: SettingsOf
) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, metavar="DIR", help="the service's data_dir")
        p.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
        p.add_argument(
            "--container",
            action="append",
            metavar="C",
            help="a container to read (repeatable; default: default_container)",
        )

    group = sub.add_parser("catalog", help="the metadata of the backups a store holds")
    commands = group.add_subparsers(dest="catalog_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "rebuild", help="recreate the metadata of every backup in a store from its manifests"
    )
    p.add_argument("--store", required=True, metavar="NAME", help="the store's name")
    common(p)
    p.set_defaults(func=lambda args: alone(catalog_rebuild)(args, settings_of(args)))


def add_rotate(
    key: argparse._SubParsersAction[argparse.ArgumentParser], settings_of: SettingsOf
) -> None:
    p = key.add_parser(
        "rotate", help="a new master key; every manifest re-wrapped under it (resumable)"
    )
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="the service's data_dir")
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    p.add_argument(
        "--container",
        action="append",
        metavar="C",
        help="also rewrite this container in every store (repeatable)",
    )
    p.set_defaults(func=lambda args: alone(key_rotate)(args, settings_of(args)))
