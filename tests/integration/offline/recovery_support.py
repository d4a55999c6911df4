"""Shared by the catalog rebuild and key rotation tests: a settings file the commands
read, a SQLite scenario taken through the service, and restores through the API."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fixtures.service import Caller, Harness

SRC = Path(__file__).resolve().parents[3] / "src"
QUERY = "SELECT id, body FROM t ORDER BY id"


def write_config(
    path: Path, data_dir: Path, stores: list[dict[str, str]] | None = None, **top: str
) -> Path:
    """A TOML settings file naming the service's data_dir and stores, as an operator's."""
    lines = [f"data_dir = {json.dumps(str(data_dir))}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in top.items()]
    for entry in stores or []:
        lines.append("[[stores]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in entry.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def command(*argv: str | Path) -> list[str]:
    return [sys.executable, "-m", "strongroom", *map(str, argv)]


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["PYTHONPATH"] = str(SRC)
    env.update(extra or {})
    return env


def run(*argv: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(),
        check=False,
    )


def rows(path: str | Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(db.execute(QUERY))
    finally:
        db.close()


def change(path: str | Path, first: int, last: int, tag: str) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT)")
        db.executemany(
            "INSERT OR REPLACE INTO t VALUES (?, ?)",
            [(i, f"{tag} {i} " + "x" * 200) for i in range(first, last)],
        )


@dataclass
class Taken:
    """Backups taken through the service, with the rows each one holds."""

    instances: dict[str, str] = field(default_factory=dict)  # name → instance id
    backups: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → view
    expected: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)  # backup id → rows
    owner: dict[str, str] = field(default_factory=dict)  # backup id → caller key ("a"/"b")


def take_sqlite_chain(h: Harness, caller_key: str, name: str, taken: Taken, links: int) -> None:
    """A managed SQLite instance and a chain of ``links`` backups (full, incrementals),
    each after a change."""
    caller: Caller = h.callers[caller_key]
    inst = caller.wait_instance(caller.create_instance(name)["id"])
    taken.instances[name] = inst["id"]
    path = inst["connection"]["path"]
    for n in range(links):
        change(path, n * 150, n * 150 + 400, f"{name}-{n}")
        extra = {"incremental": 1} if n else {}
        created = caller.create_backup(inst["id"], f"{name}-{n}", **extra)
        view = caller.wait_backup(created["id"])
        taken.backups[f"{name}-{n}"] = view
        taken.expected[view["id"]] = rows(path)
        taken.owner[view["id"]] = caller_key


def restore_and_read(caller: Caller, backup_id: str) -> list[tuple[Any, ...]]:
    r = caller.post(
        "/instances", {"instance": {"name": "r", "restorePoint": {"backupRef": backup_id}}}
    )
    assert r.status_code == 200, r.text
    inst = caller.wait_instance(r.json()["instance"]["id"])
    return rows(inst["connection"]["path"])


def stop_and_forget(h: Harness) -> None:
    """The service stopped and its metadata database lost (the key file is kept)."""
    h.container.close()
    for suffix in ("", "-wal", "-shm"):
        (h.settings.data_dir / f"strongroom.db{suffix}").unlink(missing_ok=True)


def table_rows(database: Path, *tables: str) -> dict[str, list[tuple[Any, ...]]]:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return {t: list(db.execute(f"SELECT * FROM {t} ORDER BY 1, 2")) for t in tables}
    finally:
        db.close()
