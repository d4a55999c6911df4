"""``strongroom restore``, ``strongroom ls`` and ``strongroom key export``: the commands
that work without the service (see :mod:`strongroom.offline`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from strongroom.engines.errors import EngineError
from strongroom.engines.identity import InstanceIdentity
from strongroom.offline import recovery_commands
from strongroom.offline.chain import open_chain
from strongroom.offline.keyfile import KeyFileError, load_master_key, read_passphrase
from strongroom.offline.listing import list_backups
from strongroom.offline.locate import LocateError, container_of, manifest_key, open_store
from strongroom.offline.recovery_commands import SettingsOf
from strongroom.offline.restore import TargetError, restore
from strongroom.pipeline.errors import FormatError
from strongroom.pipeline.keys import MasterKey, seal_with_passphrase
from strongroom.storage.errors import StorageError

REFUSED = 1
PROBLEMS = (KeyFileError, LocateError, TargetError, FormatError, EngineError, StorageError)


def _fail(what: str, exc: BaseException) -> int:
    print(f"strongroom: {what}: {exc}", file=sys.stderr)
    return REFUSED


def restore_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    owner: InstanceIdentity | None = None
    if args.owner:
        owner = InstanceIdentity.lookup(args.owner)
        if owner is None:
            return _fail("restore refused", KeyFileError(f"no OS user named {args.owner!r}"))
    try:
        key = load_master_key(args.key, args.passphrase_file)
        store = open_store(args.from_url, args.store_config, depth=3)
    except PROBLEMS as exc:
        return _fail("restore refused", exc)
    try:
        manifest, backup_id = manifest_key(store, args.from_url)
        links = open_chain(store, manifest, backup_id, key)
        total = sum(link.opened.manifest.plain_bytes for link in links)
        with Progress(
            TextColumn("[bold]restore"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=args.quiet,
        ) as progress:
            task = progress.add_task("restore", total=total)
            restored = restore(
                store,
                links,
                args.to,
                advance=lambda n: progress.advance(task, n),
                owner=owner,
            )
    except PROBLEMS as exc:
        return _fail("restore refused", exc)
    finally:
        store.close()
    print(
        f"restored backup {backup_id} ({len(links)} link{'s' if len(links) > 1 else ''}, "
        f"{restored.datastore} {restored.version}) into {restored.path}"
    )
    if restored.datastore != "sqlite" and owner is None and os.geteuid() == 0:
        print("the files belong to root, which cannot run the server: use --owner USER")
    if restored.datastore == "postgresql":
        print(
            "start it with: pg_ctl start -D DIR (as the directory's owner; it recovers and "
            "promotes, then remove restore_command from postgresql.conf if you like)"
        )
    elif restored.datastore == "mariadb":
        print(
            "start it with: mariadbd --defaults-file=DIR/strongroom-restore.cnf "
            "--datadir=DIR --user=OWNER"
        )
    return 0


def ls_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    try:
        key = load_master_key(args.key, args.passphrase_file)
        store = open_store(args.from_url, args.store_config, depth=1)
    except PROBLEMS as exc:
        return _fail("ls", exc)
    try:
        backups = list_backups(store, container_of(store, args.from_url), key)
    except PROBLEMS as exc:
        return _fail("ls", exc)
    finally:
        store.close()
    if args.json:
        print(json.dumps([b.to_dict() for b in backups], indent=2))
    else:
        table = Table("id", "project", "instance", "datastore", "created", "parent", "size")
        for b in backups:
            if b.problem is not None:
                table.add_row(b.id, f"[red]not verified: {b.problem}[/red]", "", "", "", "", "")
                continue
            table.add_row(
                b.id,
                b.project,
                b.instance or "",
                f"{b.datastore or ''} {b.datastore_version or ''}".strip(),
                b.created,
                b.parent or "",
                str(b.size),
            )
        Console(width=None if sys.stdout.isatty() else 250).print(table)
    return 1 if any(b.problem for b in backups) else 0


def key_export_command(args: argparse.Namespace) -> int:
    from strongroom.config import Settings

    path = args.key or Settings(**({"data_dir": args.data_dir} if args.data_dir else {})).key_file
    try:
        key = MasterKey.load(path)
        sealed = seal_with_passphrase(key, read_passphrase(args.passphrase_file))
    except (OSError, ValueError, KeyFileError) as exc:
        return _fail("key export", exc)
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        return _fail("key export", OSError(f"{args.out}: {exc.strerror}"))
    with os.fdopen(fd, "wb") as out:
        out.write(sealed)
        out.flush()
        os.fsync(out.fileno())
    print(f"wrote the master key {key.key_id}, sealed with the passphrase, to {args.out}")
    return 0


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], settings_of: SettingsOf
) -> None:
    def key_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--key",
            type=Path,
            required=True,
            metavar="FILE",
            help="the master key file, or a sealed copy of it (strongroom key export)",
        )
        p.add_argument(
            "--passphrase-file", type=Path, metavar="FILE", help="opens a sealed key file"
        )
        p.add_argument(
            "--store-config",
            type=Path,
            metavar="FILE",
            help="TOML with one [[stores]] entry (Swift, S3); file:// URLs need none",
        )

    p = sub.add_parser(
        "restore", help="rebuild a backup's database files from the store, without the service"
    )
    p.add_argument("--from", dest="from_url", required=True, metavar="URL", help="manifest URL")
    p.add_argument(
        "--to",
        type=Path,
        required=True,
        metavar="PATH",
        help="SQLite: the file (or an empty directory); PostgreSQL, MariaDB: an empty or "
        "new data directory",
    )
    p.add_argument("--owner", metavar="USER", help="give the restored files to this OS user")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    key_options(p)
    p.set_defaults(func=restore_command)

    p = sub.add_parser("ls", help="list the backups a store container holds, from its manifests")
    p.add_argument(
        "--from", dest="from_url", required=True, metavar="URL", help="the container's URL"
    )
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    key_options(p)
    p.set_defaults(func=ls_command)

    key = sub.add_parser("key", help="the master key").add_subparsers(
        dest="key_command", required=True, metavar="COMMAND"
    )
    p = key.add_parser("export", help="write a passphrase-sealed copy of the master key")
    p.add_argument(
        "--passphrase-file", type=Path, required=True, metavar="FILE", help="the passphrase"
    )
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the file to create")
    p.add_argument(
        "--key", type=Path, metavar="FILE", help="the key file (default: DATA_DIR/master.key)"
    )
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="the service's data directory")
    p.set_defaults(func=key_export_command)
    recovery_commands.add_rotate(key, settings_of)
    recovery_commands.add_commands(sub, settings_of)
