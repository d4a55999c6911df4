"""Restore a chain of mariabackup streams into a new managed server.

Each link's stream is unpacked with ``mbstream -x`` (fed through stdin) into a scratch
directory in ``home``; the full backup is prepared with ``mariabackup --prepare``, then each
incremental is applied with ``--prepare --incremental-dir`` (MariaDB 10.2+ semantics: no
``--apply-log-only``) and its scratch directory removed. The prepared backup is moved into
the new data directory with ``--move-back`` and the server booted with new service
accounts. Every tool runs as the new instance's OS user: the files are the tenant's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from strongroom.engines import process
from strongroom.engines.base import Connection, InstanceRequest, RestoreInput
from strongroom.engines.deadline import read_by, seconds_left
from strongroom.engines.errors import EngineError, InvalidRequestError, RestoreError
from strongroom.engines.identity import InstanceIdentity, remove_tree
from strongroom.engines.mariadb import accounts, metadata, server
from strongroom.engines.mariadb.managed import ManagedServers
from strongroom.engines.mariadb.server import Layout
from strongroom.engines.mariadb.tools import Tools, failure_reason, read_tool_file

# Options a restored server must share with the server the backup came from.
CARRIED_OPTIONS = ("innodb_page_size", "innodb_data_file_path", "innodb_undo_tablespaces")


def restore(
    servers: ManagedServers,
    tools: Tools,
    home: Path,
    chain: Sequence[RestoreInput],
    request: InstanceRequest,
    *,
    deadline: float | None = None,
) -> Connection:
    """A new server in ``home`` from ``chain`` (full first); nothing is left running or
    on disk when a step fails. Every step ends by ``deadline`` (``time.monotonic()``;
    default: each within the engine's timeout)."""
    chain = read_by(chain, deadline, RestoreError)

    def limit(when: str) -> float:
        return seconds_left(deadline, servers.timeout, RestoreError, when)

    layout = Layout(Path(home))
    if layout.datadir.exists() or layout.config.exists():
        raise RestoreError("the instance directory already holds a MariaDB server")
    try:
        accounts.check_request(request)
    except InvalidRequestError as exc:
        raise RestoreError(str(exc)) from None
    identity = InstanceIdentity.current()
    try:
        metadata.check_chain([link.metadata for link in chain], tools.series)
        identity = servers.open_home(layout, RestoreError)
        carried = unpack_and_prepare(layout, identity, tools, chain, limit)
        servers.write_config(layout, identity, extra=carried)
        base = layout.restore_dir / "base"
        _run_tool(
            identity,
            layout,
            [
                tools.mariabackup,
                "--no-defaults",
                "--move-back",
                f"--datadir={layout.datadir}",
                f"--target-dir={base}",
            ],
            "moving the prepared backup into the data directory",
            limit("before the move"),
        )
        remove_tree(layout.restore_dir)
        server.close_datadir(layout)
        return servers.boot(
            layout, identity, tools, request, RestoreError, timeout=limit("before the start")
        )
    except RestoreError:
        servers.discard(layout, identity)
        raise
    except EngineError as exc:
        servers.discard(layout, identity)
        raise RestoreError(str(exc)) from None
    except BaseException:
        servers.discard(layout, identity)
        raise


def unpack_and_prepare(
    layout: Layout,
    identity: InstanceIdentity,
    tools: Tools,
    chain: Sequence[RestoreInput],
    limit: Callable[[str], float],
) -> dict[str, str]:
    """Unpack and prepare every link into ``restore/base``; return the server options the
    backup was taken with that the new server must share. ``limit(when)``: the seconds a
    step may take."""
    typed = metadata.check_chain([link.metadata for link in chain], tools.series)
    identity.private_dir(layout.restore_dir)
    base = layout.restore_dir / "base"
    carried: dict[str, str] = {}
    for index, (link, meta) in enumerate(zip(chain, typed, strict=True)):
        target = base if index == 0 else layout.restore_dir / f"incremental-{index}"
        identity.private_dir(target)
        what = "the full backup" if index == 0 else f"incremental backup {index}"
        try:
            process.stream_in(
                identity.argv([tools.mbstream, "-x", "-C", target]),
                link.stream,
                cwd=layout.home,
                timeout=limit(f"before unpacking {what}"),
            )
        except process.ProcessError as exc:
            reason = failure_reason(exc, tools.mbstream)
            raise RestoreError(f"unpacking {what} failed: {reason}") from None
        refuse_link_files(target, what)
        try:
            extracted = metadata.parse_checkpoints(read_tool_file(target, "xtrabackup_checkpoints"))
        except (OSError, ValueError):
            raise RestoreError(
                f"{what}'s stream is incomplete: it has no valid xtrabackup_checkpoints"
            ) from None
        metadata.check_extracted(extracted, meta)
        argv = [tools.mariabackup, "--no-defaults", "--prepare", f"--target-dir={base}"]
        if index == 0:
            carried = carried_options(base)
        else:
            argv.append(f"--incremental-dir={target}")
        _run_tool(identity, layout, argv, f"preparing {what}", limit(f"before preparing {what}"))
        if index > 0:
            remove_tree(target)
    return carried


def refuse_link_files(target: Path, what: str) -> None:
    """Refuse an unpacked link whose tables live elsewhere (InnoDB ``.isl`` files, from
    ``DATA DIRECTORY``): ``--prepare`` would open, and ``--move-back`` move the table to,
    the path the file names, which the tenant wrote (offline, as root). Links are not
    followed; a restore never puts a file outside its own data directory."""
    for directory, _dirs, files in os.walk(target, followlinks=False):
        for name in files:
            if name.lower().endswith(".isl"):
                table = os.path.relpath(os.path.join(directory, name), target)
                raise RestoreError(
                    f"{what} holds a table stored outside its data directory ({table}, "
                    "from DATA DIRECTORY): such a backup is not restored"
                )


def carried_options(base: Path) -> dict[str, str]:
    """The options of ``backup-my.cnf`` the new server must be started with."""
    try:
        text = read_tool_file(base, "backup-my.cnf")
    except OSError:
        return {}
    values = metadata.parse_key_values(text)
    carried = {key: values[key] for key in CARRIED_OPTIONS if values.get(key)}
    if carried.get("innodb_page_size") == "16384":
        del carried["innodb_page_size"]
    return carried


def _run_tool(
    identity: InstanceIdentity,
    layout: Layout,
    argv: Sequence[str | os.PathLike[str]],
    what: str,
    timeout: float,
) -> None:
    try:
        process.run(identity.argv(argv), cwd=layout.home, timeout=timeout)
    except process.ProcessError as exc:
        raise RestoreError(f"{what} failed: {failure_reason(exc, argv[0])}") from None
