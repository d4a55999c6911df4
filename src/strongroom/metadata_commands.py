"""`strongroom metadata backup`: the service's own metadata database into a store."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from strongroom.config import Settings
from strongroom.offline.metadata_backup import MetadataBackupError, backup_metadata
from strongroom.pipeline.errors import FormatError
from strongroom.storage.errors import StorageError

SettingsOf = Callable[[argparse.Namespace], Settings]


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], settings_of: SettingsOf
) -> None:
    group = sub.add_parser("metadata", help="the service's own metadata database")
    commands = group.add_subparsers(dest="metadata_command", required=True, metavar="COMMAND")
    p = commands.add_parser("backup", help="back up the metadata database into a store")
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="the service's data_dir")
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    p.add_argument("--store", metavar="NAME", help="store name (default: default_store)")
    p.add_argument("--container", metavar="C", help="container (default: default_container)")
    p.set_defaults(func=lambda args: metadata_backup(args, settings_of(args)))


def metadata_backup(args: argparse.Namespace, settings: Settings) -> int:
    from strongroom.bootstrap import StartupError, build_store_catalog

    if settings.database_url is not None:
        print(
            "strongroom: metadata backup copies the SQLite metadata file only; for a "
            "PostgreSQL or MariaDB database_url use that server's own backup "
            "(pg_dump, mariadb-dump)",
            file=sys.stderr,
        )
        return 2
    try:
        stores = build_store_catalog(settings)
    except (StartupError, FormatError, ValueError, OSError) as exc:
        print(f"strongroom: cannot open the stores or the master key: {exc}", file=sys.stderr)
        return 2
    name = args.store or stores.default_name
    if name not in stores.names():
        print(f"strongroom: no store named {name!r}", file=sys.stderr)
        return 2
    try:
        done = backup_metadata(
            settings.data_dir / "strongroom.db",
            data_dir=settings.data_dir,
            store=stores.backend(name),
            container=args.container or settings.default_container,
            master_key=stores.master_key,
        )
    except (MetadataBackupError, StorageError, OSError) as exc:
        print(f"strongroom: metadata backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"{done.backup_id} {done.location} {done.plain_bytes} bytes")
    return 0
