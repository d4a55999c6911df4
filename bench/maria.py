"""The MariaDB data set and the peer tool (mariabackup --stream=xbstream | zstd)."""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import WORK, free_port, log, private_dir, run

OS_USER = "mysql"
BATCH_ROWS = 1_000_000


@dataclass
class MariaServer:
    root: Path
    port: int
    password: str

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket(self) -> Path:
        return self.root / "run" / "mariadb.sock"

    @property
    def config(self) -> Path:
        return self.root / "my.cnf"

    @property
    def client_cnf(self) -> Path:
        return self.root / "client.cnf"

    def sql(self, query: str) -> str:
        return run(
            [
                "mariadb",
                "--no-defaults",
                f"--socket={self.socket}",
                "-uroot",
                "-N",
                "-B",
                "-e",
                query,
            ]
        ).stdout

    def connection_params(self) -> dict[str, object]:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": "bench_backup",
            "password": self.password,
            "datadir": str(self.data),
        }


def server_config(datadir: Path, sock: Path, port: int, extra: str = "") -> str:
    return (
        "[mariadbd]\n"
        f"datadir={datadir}\n"
        f"socket={sock}\n"
        f"port={port}\n"
        "bind-address=127.0.0.1\n"
        f"user={OS_USER}\n"
        f"pid-file={sock.with_suffix('.pid')}\n"
        f"log-error={datadir.parent / (datadir.name + '-error.log')}\n"
        "innodb_buffer_pool_size=256M\n"
        "innodb_log_file_size=512M\n"
        "innodb_flush_log_at_trx_commit=2\n"
        "skip-name-resolve\n" + extra
    )


def start_server(config: Path, sock: Path, timeout: float = 600) -> None:
    """Start mariadbd in the background and wait until it answers on ``sock``."""
    run(["bash", "-c", f"nohup /usr/sbin/mariadbd --defaults-file={config} >/dev/null 2>&1 &"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ping = run(
            ["mariadb-admin", "--no-defaults", f"--socket={sock}", "-uroot", "ping"], check=False
        )
        if ping.returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"mariadbd did not start ({config})")


def stop_server(sock: Path) -> None:
    if sock.exists():
        run(
            ["mariadb-admin", "--no-defaults", f"--socket={sock}", "-uroot", "shutdown"],
            check=False,
        )


def setup(scale: int) -> MariaServer:
    """A MariaDB server of its own (datadir, socket, port, as ``mysql``) with a table like
    pgbench_accounts: ``scale`` x 100,000 rows, md5-text filler."""
    root = WORK / "maria"
    stop_server(root / "run" / "mariadb.sock")
    shutil.rmtree(root, ignore_errors=True)
    private_dir(root, None, 0o711)
    private_dir(root / "run", OS_USER, 0o711)
    server = MariaServer(root, free_port(), secrets.token_urlsafe(18))
    server.config.write_text(server_config(server.data, server.socket, server.port))
    log(f"MariaDB: install in {server.data} (port {server.port})")
    run(
        [
            "mariadb-install-db",
            f"--defaults-file={server.config}",
            f"--user={OS_USER}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
        ]
    )
    start_server(server.config, server.socket)
    server.sql(
        f"CREATE USER bench_backup@'127.0.0.1' IDENTIFIED BY '{server.password}';"
        "GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO bench_backup@'127.0.0.1';"
        "CREATE DATABASE bench;"
        "CREATE TABLE bench.accounts (aid INT NOT NULL PRIMARY KEY, bid INT NOT NULL, "
        "abalance INT NOT NULL, filler CHAR(84)) ENGINE=InnoDB;"
    )
    rows = scale * 100_000
    log(f"MariaDB: loading {rows} rows")
    for first in range(1, rows + 1, BATCH_ROWS):
        last = min(rows, first + BATCH_ROWS - 1)
        server.sql(
            "INSERT INTO bench.accounts SELECT seq, (seq - 1) DIV 100000 + 1, 0, "
            f"concat(md5(seq), md5(-seq)) FROM bench.seq_{first}_to_{last};"
        )
    server.client_cnf.write_text(
        "[client]\nuser=bench_backup\n"
        f"password={server.password}\nhost=127.0.0.1\nport={server.port}\nprotocol=TCP\n"
    )
    server.client_cnf.chmod(0o600)
    flush_dirty_pages(server)
    return server


def flush_dirty_pages(server: MariaServer, timeout: float = 300) -> None:
    """Write every dirty page so InnoDB's checkpoint catches up: otherwise the next backup
    copies all the redo log since an old checkpoint, and whichever tool runs first pays."""
    server.sql("SET GLOBAL innodb_max_dirty_pages_pct = 0")
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            dirty = server.sql("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
            if int(dirty.split()[-1]) == 0:
                break
            time.sleep(0.2)
    finally:
        server.sql("SET GLOBAL innodb_max_dirty_pages_pct = 90")


def update_five_percent(server: MariaServer, round_no: int) -> None:
    server.sql(
        f"UPDATE bench.accounts SET abalance = abalance + 1 WHERE aid % 20 = {round_no % 20}"
    )
    flush_dirty_pages(server)


def backup_argv(server: MariaServer, out: Path, scratch: Path, from_lsn: int | None) -> list[str]:
    """``mariabackup --backup --stream=xbstream | zstd -1 -T2`` (incremental with
    ``--incremental-lsn``); LSNs go to ``scratch/lsn``."""
    inc = f"--incremental-lsn={from_lsn}" if from_lsn is not None else ""
    return [
        "bash",
        "-c",
        f"set -eo pipefail; rm -rf {scratch}; mkdir -p {scratch}/target {scratch}/lsn; "
        f"mariabackup --defaults-file={server.client_cnf} --backup --stream=xbstream "
        f"--target-dir={scratch}/target --extra-lsndir={scratch}/lsn --datadir={server.data} "
        f"{inc} 2>{scratch}/log | zstd -1 -T2 -q > {out}",
    ]


def to_lsn(scratch: Path) -> int:
    for line in (scratch / "lsn" / "xtrabackup_checkpoints").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "to_lsn":
            return int(value)
    raise RuntimeError("no to_lsn in xtrabackup_checkpoints")


def restore_argv(full: Path, incr: Path, target: Path, port: int) -> list[str]:
    """Unpack, prepare the full, apply the incremental, move back, start, wait."""
    base, inc, data = target / "base", target / "inc", target / "data"
    sock = target / "run" / "mariadb.sock"
    config = target / "my.cnf"
    script = (
        f"set -eo pipefail; mkdir -p {base} {inc} {target}/run; chmod 711 {target}; "
        f"chown {OS_USER}: {target}/run; "
        f"zstd -dc -q {full} | mbstream -x -C {base}; "
        f"zstd -dc -q {incr} | mbstream -x -C {inc}; "
        f"mariabackup --no-defaults --prepare --target-dir={base} 2>/dev/null; "
        f"mariabackup --no-defaults --prepare --target-dir={base} --incremental-dir={inc} "
        "2>/dev/null; "
        f"cat > {config} <<'EOF'\n{server_config(data, sock, port)}EOF\n"
        f"mariabackup --no-defaults --move-back --datadir={data} --target-dir={base} "
        "2>/dev/null; "
        f"rm -rf {base} {inc}; chown -R {OS_USER}: {data}; "
        f"nohup /usr/sbin/mariadbd --defaults-file={config} >/dev/null 2>&1 & "
        f"until mariadb-admin --no-defaults --socket={sock} -uroot ping >/dev/null 2>&1; "
        "do sleep 0.05; done"
    )
    return ["bash", "-c", script]


def stop_restored(target: Path) -> None:
    stop_server(target / "run" / "mariadb.sock")
    for _ in range(200):
        if not (target / "run" / "mariadb.pid").exists():
            break
        time.sleep(0.05)


def drop_restored(target: Path) -> None:
    stop_restored(target)
    shutil.rmtree(target, ignore_errors=True)
