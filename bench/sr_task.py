"""One Strongroom operation per process, through the product's own classes.

The benchmark measures this process (and the tools it starts): the same path a backup job
takes in ``strongroom serve`` — the engine streams into ``services.transfer.Transfer``,
whose ``BackupWriter`` chunks, compresses (zstd), encrypts (AES-256-GCM) and checksums
(SHA-256) into a ``local`` store; a restore reads the chain through the verified reader
into the engine's ``restore_instance``.

    python -m bench.sr_task register --engine pg --params FILE --out FILE
    python -m bench.sr_task backup   --engine pg --conn FILE --state FILE --label L [--parent P]
    python -m bench.sr_task restore  --engine pg --conn FILE --state FILE --label L --home DIR
                             [--archive FILE --target-time T]   (point in time: WAL batches)
    python -m bench.sr_task stop     --engine pg --home DIR --conn FILE
    python -m bench.sr_task destroy  --engine pg --home DIR --conn FILE
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from strongroom.allocator import keep_chunk_buffers_in_heap
from strongroom.config import Settings
from strongroom.domain.model import Backup, BackupState
from strongroom.engines.base import Engine, InstanceRequest, PointInTimeEngine
from strongroom.pipeline.keys import MasterKey
from strongroom.services.rules import ServiceRules
from strongroom.services.stores import StoreCatalog
from strongroom.services.transfer import Transfer
from strongroom.services.wal_archive import StoredBatch, WalArchive
from strongroom.storage.config import LocalStoreConfig
from strongroom.storage.registry import StoreSet

PROJECT = "bench"
CONTAINER = "database_backups"


# Registration now names the project asking (allow-lists may be per project); the
# benchmark's lists serve every project.
BENCH_PROJECT = "benchproject"


def _engine(name: str, work: Path) -> Engine:
    # Each engine imported when asked for, as the service's registry does: a PostgreSQL
    # restore does not pay for MariaDB's modules.
    if name == "pg":
        from strongroom.engines.postgresql import PostgresEngine

        return PostgresEngine(
            allowed_hosts=("127.0.0.1",),
            allowed_data_dirs=(work,),
            # postgresql_page_deltas: on by default for a local store, as here ("local");
            # "0" for the turn that measures whole pages
            page_deltas=os.environ.get("BENCH_PAGE_DELTAS", "1") == "1",
        )
    from strongroom.engines.mariadb import MariaDbEngine

    return MariaDbEngine(allowed_hosts=("127.0.0.1",), allowed_datadirs=(work / "maria",))


def _transfer(data_dir: Path) -> Transfer:
    """What ``bootstrap.build`` wires for the default settings (a ``local`` store under
    ``data_dir/objects``, the default chunk size, zstd level and transfer threads), without
    importing the API, the metadata database or the other store drivers."""
    settings = Settings(data_dir=data_dir)
    for sub, mode in (("objects", 0o700), ("instances", 0o711)):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
        (data_dir / sub).chmod(mode)
    data_dir.chmod(0o711)
    store_set = StoreSet.from_configs(
        [LocalStoreConfig(name="local", root=data_dir / "objects")], "local"
    )
    stores = StoreCatalog(store_set, MasterKey.load_or_create(settings.key_file))
    rules = ServiceRules(
        chunk_size=settings.chunk_size,
        compression_level=settings.compression_level,
        transfer_threads=settings.transfer_threads,
    )
    return Transfer(stores, rules)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _save(path: Path, value: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(value, fh)


def _backup_obj(record: dict[str, Any]) -> Backup:
    now = datetime.now(UTC)
    return Backup(
        id=record["id"],
        project_id=PROJECT,
        name=record["id"],
        description=None,
        instance_id=None,
        parent_id=record.get("parent_id"),
        state=BackupState.COMPLETED,
        created=now,
        updated=now,
        location_ref=record.get("location_ref"),
        store_name="local",
        container=CONTAINER,
    )


def _stored_batch(record: dict[str, Any]) -> StoredBatch:
    """A batch as ``bench.pitr_compare`` writes it (what the catalog keeps of one)."""
    return StoredBatch(
        **{**record, "archived_through": datetime.fromisoformat(record["archived_through"])}
    )


def _stored_size(data_dir: Path, backup_id: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(data_dir / "objects"):
        if backup_id in dirpath:
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["register", "backup", "restore", "stop", "destroy"])
    parser.add_argument("--engine", choices=["pg", "maria"], required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--params", type=Path)
    parser.add_argument("--conn", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--state", type=Path)
    parser.add_argument("--label")
    parser.add_argument("--parent")
    # Absolute, as the service's data_dir always is (a server refuses a relative home).
    parser.add_argument("--home", type=lambda value: Path(value).absolute())
    parser.add_argument("--archive", type=Path, help="JSON list of the WAL batches to replay")
    parser.add_argument("--target-time", help="naive UTC ISO time to recover to")
    args = parser.parse_args(argv)
    keep_chunk_buffers_in_heap()  # as `strongroom serve` / `worker` do at start
    engine = _engine(args.engine, args.work)
    data_dir = args.work.resolve() / "strongroom"

    if args.command == "register":
        params = json.loads(args.params.read_text())
        connection = engine.register_external(params, project_id=BENCH_PROJECT)
        _save(args.out, connection)
        return 0
    if args.command == "stop":
        engine.stop_instance(args.home, json.loads(args.conn.read_text()))
        return 0
    if args.command == "destroy":
        engine.destroy_instance(args.home, json.loads(args.conn.read_text()))
        return 0

    connection = json.loads(args.conn.read_text())
    transfer = _transfer(data_dir)
    state = _load(args.state)
    if args.command == "backup":
        parent = _backup_obj(state[args.parent]) if args.parent else None
        record: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "parent_id": parent.id if parent else None,
        }
        backup = _backup_obj(record)
        started = time.perf_counter()
        outcome = transfer.backup(
            backup=backup,
            engine=engine,
            connection=connection,
            datastore="postgresql" if args.engine == "pg" else "mariadb",
            datastore_version="bench",
            parent=parent,
            report=lambda _done: None,
        )
        elapsed = time.perf_counter() - started
        record["location_ref"] = outcome.location_ref
        state[args.label] = record
        _save(args.state, state)
        print(
            json.dumps(
                {
                    "id": record["id"],
                    "plain_bytes": outcome.plain_bytes,
                    "stored_bytes": _stored_size(data_dir, record["id"]),
                    "op_seconds": elapsed,
                }
            )
        )
        return 0

    # restore
    started = time.perf_counter()
    by_id = {r["id"]: r for r in state.values()}
    target = _backup_obj(state[args.label])
    links = transfer.open_chain(
        target, lambda bid: _backup_obj(by_id[bid]) if bid in by_id else None
    )
    archive = (
        WalArchive(transfer).open_batches(
            [_stored_batch(b) for b in json.loads(args.archive.read_text())]
        )
        if args.archive
        else ()
    )
    restored = cast(PointInTimeEngine, engine).restore_instance(
        args.home,
        transfer.restore_inputs(links),
        InstanceRequest(name="bench"),
        archive=archive,
        target_time=datetime.fromisoformat(args.target_time) if args.target_time else None,
    )
    elapsed = time.perf_counter() - started
    _save(args.out, restored)
    print(json.dumps({"op_seconds": elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
