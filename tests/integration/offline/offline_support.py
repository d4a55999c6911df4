"""Running the offline commands as an operator would: a separate process with nothing but
the store, the key and the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fixtures.service import Harness

SRC = Path(__file__).resolve().parents[3] / "src"


def strongroom(*argv: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["PYTHONPATH"] = str(SRC)
    return subprocess.run(
        [sys.executable, "-m", "strongroom", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def lose_the_service(h: Harness) -> Path:
    """Stop the service and delete its metadata database; return a copy of the master
    key kept apart, as an operator would keep it."""
    key_copy = h.settings.data_dir.parent / "kept-master.key"
    key_copy.write_bytes(h.settings.key_file.read_bytes())
    key_copy.chmod(0o600)
    h.container.close()
    for suffix in ("", "-wal", "-shm"):
        (h.settings.data_dir / f"strongroom.db{suffix}").unlink(missing_ok=True)
    h.settings.key_file.unlink()
    return key_copy


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))
