"""A prepared data directory rebuilt from a chain, without starting a server: what the
offline restore (``strongroom restore --to DIR``) writes.

The links are unpacked and prepared exactly as a service restore does it
(:func:`restore.unpack_and_prepare`), then moved into ``staging/data`` with
``mariabackup --move-back``. The server options the backup was taken with that a server
on these files must share (page size, system tablespace layout) are written to
``strongroom-restore.cnf`` in the data directory.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from strongroom.engines import process
from strongroom.engines.base import RestoreInput
from strongroom.engines.errors import EngineUnavailableError, RestoreError
from strongroom.engines.identity import InstanceIdentity
from strongroom.engines.mariadb import metadata
from strongroom.engines.mariadb.restore import unpack_and_prepare
from strongroom.engines.mariadb.server import Layout
from strongroom.engines.mariadb.tools import failure_reason, find_tools

OPTIONS_FILE = "strongroom-restore.cnf"


def prepare_data_dir(staging: Path, chain: Sequence[RestoreInput], *, timeout: float) -> str:
    """Unpack, prepare and move ``chain`` into ``staging/data`` (``staging`` is a new,
    empty directory of the caller's). Returns the MariaDB series the files need.
    Raises ``RestoreError``."""
    tools = find_tools()
    if tools is None:
        raise EngineUnavailableError("MariaDB server or mariabackup is not installed")
    metadata.check_chain([link.metadata for link in chain], tools.series)
    layout = Layout(staging)
    identity = InstanceIdentity.current()
    carried = unpack_and_prepare(layout, identity, tools, chain, lambda _when: timeout)
    argv = [
        tools.mariabackup,
        "--no-defaults",
        "--move-back",
        f"--datadir={layout.datadir}",
        f"--target-dir={layout.restore_dir / 'base'}",
    ]
    try:
        process.run(argv, cwd=staging, timeout=timeout)
    except process.ProcessError as exc:
        raise RestoreError(
            f"moving the prepared backup into place failed: {failure_reason(exc, argv[0])}"
        ) from None
    shutil.rmtree(layout.restore_dir)
    layout.datadir.chmod(0o700)
    lines = [
        "# Options the restored files need; start with",
        f"#   mariadbd --defaults-file=<data dir>/{OPTIONS_FILE} --datadir=<data dir>",
        "[mariadbd]",
        *(f"{key} = {value}" for key, value in sorted(carried.items())),
    ]
    (layout.datadir / OPTIONS_FILE).write_text("\n".join(lines) + "\n")
    return tools.series
