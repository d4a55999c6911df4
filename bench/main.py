"""Strongroom benchmark: the same work through Strongroom and its peers, alternating.

Run through ``bash bench/run.sh``; see bench/README.md for what each figure means.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench import maria, pg
from bench.api_ceiling import bench_ceiling, ceiling_ids
from bench.api_load import API_ENDPOINTS, SERVE_WORKERS, LatencyResult, bench_api
from bench.common import (
    PYTHON,
    WORK,
    Sample,
    Series,
    free_port,
    log,
    measure,
    prepare_restore,
    write_result,
)

SR = "Strongroom"
PGBR = "pgBackRest"
BB = "pg_basebackup | zstd -1 -T2"
MB = "mariabackup | zstd -1 -T2"
WHOLE = "Strongroom with whole pages"  # a turn in the rotation; recorded as SR
MB_RESTORE = "mbstream + mariabackup --prepare + start"

API_LAYOUTS = ("embedded", f"embedded, serve --workers {SERVE_WORKERS}", "scaled-out")
Figures = dict[str, Series]
Results = dict[tuple[str, str], Figures]


def _figures() -> Figures:
    return defaultdict(Series)


def record(results: Results, section: str, tool: str, sample: Sample, stored: int | None) -> None:
    figs = results.setdefault((section, tool), _figures())
    figs["wall"].add(sample.wall)
    figs["cpu"].add(sample.cpu)
    figs["rss"].add(sample.rss / 1e6)
    if tool == SR:
        figs["rss_py"].add(sample.rss_root / 1e6)
    if stored is not None:
        figs["stored"].add(stored / 1e6)
    op = json.loads(sample.stdout).get("op_seconds") if sample.stdout.startswith("{") else None
    if op is not None:
        figs["op"].add(op)
    stored_text = f", stored {stored / 1e6:.1f} MB" if stored is not None else ""
    log(
        f"  {section:<22} {tool:<30} wall {sample.wall:7.2f}s  cpu {sample.cpu:7.2f}s  "
        f"rss {sample.rss / 1e6:7.1f} MB{stored_text}"
    )


def sr_argv(*args: str) -> list[str]:
    return [PYTHON, "-m", "bench.sr_task", *args, "--work", str(WORK)]


def rotate(items: list[str], by: int) -> list[str]:
    by %= len(items)
    return items[by:] + items[:by]


def stored_bytes(sample: Sample) -> int:
    return int(json.loads(sample.stdout)["stored_bytes"])


@dataclass(frozen=True)
class StrongroomTask:
    """Strongroom's side of the work, one `bench.sr_task` process per operation."""

    engine: str  # "pg" or "maria"
    name: str  # file prefix under WORK

    @property
    def conn(self) -> Path:
        return WORK / f"{self.name}-conn.json"

    @property
    def state(self) -> Path:
        return WORK / f"{self.name}-state.json"

    def register(self, connection_params: dict[str, object]) -> None:
        params = WORK / f"{self.name}-params.json"
        params.write_text(json.dumps(connection_params))
        params.chmod(0o600)
        self.state.unlink(missing_ok=True)
        measure(self._argv("register", "--params", str(params), "--out", str(self.conn)))

    def backup(self, label: str, parent: str | None = None, *, deltas: bool = True) -> Sample:
        """``deltas``: page deltas, the default for a local store (``postgresql_page_deltas
        = "local"``); False measures whole pages (``false``)."""
        extra = ["--parent", parent] if parent else []
        env = {"BENCH_PAGE_DELTAS": "1" if deltas else "0"}
        return measure(self._labelled("backup", label, *extra), env=env)

    def restore(self, label: str, run: int) -> tuple[Sample, Callable[[], object]]:
        """Restore ``label`` into a new managed instance, measured, then stop it; returns
        the sample and what removes the instance (after the round's restores, see
        :func:`common.prepare_restore`)."""
        home = WORK / "strongroom" / "instances" / f"{self.name}-restore-{run}"
        out = WORK / f"{self.name}-restored-{run}.json"
        sample = measure(self.restore_argv(label, home, out))
        measure(self._argv("stop", "--home", str(home), "--conn", str(out)))

        destroy = self._argv("destroy", "--home", str(home), "--conn", str(out))
        return sample, functools.partial(measure, destroy)

    def restore_argv(self, label: str, home: Path, out: Path, *extra: str) -> list[str]:
        """Restore ``label`` into a new managed instance in ``home``; its connection goes
        to ``out``."""
        return self._labelled("restore", label, "--home", str(home), "--out", str(out), *extra)

    def _labelled(self, command: str, label: str, *args: str) -> list[str]:
        """``command`` on the backup ``label`` of this server's state file."""
        return self._argv(
            command, "--conn", str(self.conn), "--state", str(self.state), "--label", label, *args
        )

    def _argv(self, command: str, *args: str) -> list[str]:
        return sr_argv(command, "--engine", self.engine, *args)


# -- PostgreSQL ---------------------------------------------------------------------------------
def bench_postgres(
    scale: int, runs: int, restore_runs: int, patterns: list[str], results: Results
) -> None:
    cluster = pg.setup(scale)
    try:
        sr = StrongroomTask("pg", "pg")
        sr.register(cluster.connection_params())
        for r in range(runs):
            log(f"PostgreSQL run {r + 1}/{runs}")
            for tool in rotate([SR, PGBR, BB], r):
                if tool == SR:
                    s = sr.backup(f"full{r}")
                    record(results, "PG full", SR, s, stored_bytes(s))
                elif tool == PGBR:
                    s = measure(cluster.pgbackrest_argv("backup", "--type=full"))
                    delta, wal = pg.pgbackrest_stored(cluster, pg.pgbackrest_last(cluster))
                    record(results, "PG full", PGBR, s, delta + wal)
                else:
                    out = WORK / "basebackup.tar.zst"
                    s = measure(pg.basebackup_argv(cluster, out))
                    record(results, "PG full", BB, s, out.stat().st_size)
                    out.unlink()
            # Two incrementals in a chain: after a 5 % update spread over the table, then
            # after a contiguous 5 % range (see pg.update_five_percent).
            parent = f"full{r}"
            for pattern in patterns:
                changed = pg.update_five_percent(cluster, r, pattern, scale)
                cluster.sql("CHECKPOINT")  # the next steps start from one state, in any order
                log(f"  updated {changed} rows of pgbench_accounts (5 %, {pattern})")
                section = f"PG incremental ({pattern})"
                label = f"incr{r}-{pattern}"
                # After the spread update, also with whole pages (page deltas off: a link
                # of its own, not the next one's parent), against the same pgBackRest backup.
                tools = [SR, PGBR, WHOLE] if pattern == "spread" else [SR, PGBR]
                for tool in rotate(tools, r):
                    if tool == SR:
                        s = sr.backup(label, parent=parent)
                        record(results, section, SR, s, stored_bytes(s))
                    elif tool == WHOLE:
                        s = sr.backup(f"{label}-whole", parent=parent, deltas=False)
                        record(results, f"{section}, whole pages", SR, s, stored_bytes(s))
                    else:
                        s = measure(cluster.pgbackrest_argv("backup", "--type=incr"))
                        delta, wal = pg.pgbackrest_stored(cluster, pg.pgbackrest_last(cluster))
                        record(results, section, PGBR, s, delta + wal)
                        if pattern == "spread":
                            record(results, f"{section}, whole pages", PGBR, s, delta + wal)
                parent = label
            # Restored directories are removed after both restores of a round: a removal
            # slows the next restore's file creation (see common.prepare_restore).
            removals: list[Callable[[], object]] = []
            for tool in [] if r >= restore_runs else rotate([SR, PGBR], r):
                prepare_restore()
                if tool == SR:
                    # the newest backup, as pgbackrest restore picks it: full + incrementals
                    s, remove = sr.restore(parent, r)
                    record(results, "PG restore full+incr", SR, s, None)
                    removals.append(remove)
                else:
                    target = WORK / "pgbackrest-restore" / "data"
                    s = measure(pg.pgbackrest_restore_argv(cluster, target, free_port()))
                    record(results, "PG restore full+incr", PGBR, s, None)
                    pg.stop_restored(target)
                    removals.append(functools.partial(pg.drop_restored, target))
            for remove in removals:
                remove()
    finally:
        cluster.stop()


def bench_memory(scale: int, runs: int, results: Results) -> None:
    """Strongroom's full backup of a cluster at ``scale`` (the main cluster gives SCALE)."""
    cluster = pg.setup(scale, name="pg-small")
    try:
        sr = StrongroomTask("pg", "pgsmall")
        sr.register(cluster.connection_params())
        for r in range(runs):
            s = sr.backup(f"full{r}")
            record(results, f"PG full at scale {scale}", SR, s, stored_bytes(s))
    finally:
        pg.remove(cluster)


# -- MariaDB ------------------------------------------------------------------------------------
def bench_mariadb(scale: int, runs: int, restore_runs: int, results: Results) -> None:
    server = maria.setup(scale)
    try:
        sr = StrongroomTask("maria", "maria")
        sr.register(server.connection_params())
        full_out, incr_out = WORK / "mariabackup-full.xb.zst", WORK / "mariabackup-incr.xb.zst"
        scratch = WORK / "mariabackup-scratch"
        for r in range(runs):
            log(f"MariaDB run {r + 1}/{runs}")
            peer_lsn = 0
            for tool in rotate([SR, MB], r):
                if tool == SR:
                    s = sr.backup(f"full{r}")
                    record(results, "MariaDB full", SR, s, stored_bytes(s))
                else:
                    s = measure(maria.backup_argv(server, full_out, scratch, None))
                    peer_lsn = maria.to_lsn(scratch)
                    record(results, "MariaDB full", MB, s, full_out.stat().st_size)
            maria.update_five_percent(server, r)
            for tool in rotate([SR, MB], r):
                if tool == SR:
                    s = sr.backup(f"incr{r}", parent=f"full{r}")
                    record(results, "MariaDB incremental", SR, s, stored_bytes(s))
                else:
                    s = measure(maria.backup_argv(server, incr_out, scratch, peer_lsn))
                    record(results, "MariaDB incremental", MB, s, incr_out.stat().st_size)
            removals: list[Callable[[], object]] = []
            for tool in [] if r >= restore_runs else rotate([SR, MB], r):
                prepare_restore()
                if tool == SR:
                    s, remove = sr.restore(f"incr{r}", r)
                    record(results, "MariaDB restore full+incr", SR, s, None)
                    removals.append(remove)
                else:
                    target = WORK / "mariabackup-restore"
                    s = measure(maria.restore_argv(full_out, incr_out, target, free_port()))
                    record(results, "MariaDB restore full+incr", MB_RESTORE, s, None)
                    maria.stop_restored(target)
                    removals.append(functools.partial(maria.drop_restored, target))
            for remove in removals:
                remove()
        for path in (full_out, incr_out):
            path.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
    finally:
        maria.stop_server(server.socket)


# -- report -------------------------------------------------------------------------------------
def _cell(results: Results, section: str, tool: str, fig: str, fmt: str) -> str:
    figs = results.get((section, tool))
    return figs[fig].spread(fmt) if figs and fig in figs else "-"


def _median(results: Results, section: str, tool: str, fig: str) -> float | None:
    figs = results.get((section, tool))
    if not figs or fig not in figs or not figs[fig].values:
        return None
    return figs[fig].median


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def report(
    results: Results,
    api: list[LatencyResult],
    scale: int,
    small: int,
    runs: int,
    elapsed: float,
    api_count: int = 10_000,
    *,
    maria_scale: int = 0,
    restore_runs: int = 1,
    patterns: tuple[str, ...] | list[str] = ("spread", "range"),
) -> str:
    lines = [
        f"# Strongroom benchmark — {datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "",
        f"PostgreSQL scale {scale} (memory check also at {small}), MariaDB scale {maria_scale}, "
        f"{runs} alternating run(s) of backups, {min(runs, restore_runs)} of restores, "
        f"incrementals after 5 % updates ({', '.join(patterns)}), "
        f"{os.cpu_count()} CPUs, {platform.platform()}, "
        f"whole run {elapsed / 60:.1f} min.",
        "Medians, with min-max over the runs in parentheses. Wall and CPU in seconds "
        "(CPU = user+sys of the tool's process tree; database server processes are not "
        "counted), peak RSS and stored bytes in MB.",
        "",
        "| operation | tool | wall s | in-process s | CPU s | peak RSS MB | of which Python MB "
        "| stored MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for section, tool in results:
        shown = tool.replace("|", "\\|")
        lines.append(
            f"| {section} | {shown} | {_cell(results, section, tool, 'wall', '.2f')} | "
            f"{_cell(results, section, tool, 'op', '.2f')} | "
            f"{_cell(results, section, tool, 'cpu', '.2f')} | "
            f"{_cell(results, section, tool, 'rss', '.0f')} | "
            f"{_cell(results, section, tool, 'rss_py', '.0f')} | "
            f"{_cell(results, section, tool, 'stored', '.1f')} |"
        )
    if api:
        lines += [
            "",
            f"| API ({api_count:,} backups in the project) | requests | median ms | p99 ms "
            "| req/s | host CPU busy | socket errors |",
            "|---|---|---|---|---|---|---|",
        ]
        for a in api:
            lines.append(
                f"| {a.name} | {a.requests} | {a.median_ms:.1f} | {a.p99_ms:.1f} | {a.rps:.0f} "
                f"| {a.host_cpu_busy:.0%} | {a.socket_errors} |"
            )

    def check(
        name: str,
        value: float | None,
        target: float,
        unit: str = "",
        spread: str = "-",
        at_least: bool = False,
    ) -> str:
        tgt = f"{'≥' if at_least else '≤'} {target}{' ' + unit if unit else ''}"
        if value is None:
            return f"| {name} | - | - | {tgt} | not measured |"
        ok = "met" if (value >= target if at_least else value <= target) else "**not met**"
        return f"| {name} | {value:.2f}{' ' + unit if unit else ''} | {spread} | {tgt} | {ok} |"

    rss_big = _median(results, "PG full", SR, "rss")
    rss_small = _median(results, f"PG full at scale {small}", SR, "rss")

    def ratio(section: str, peer: str, fig: str, own: str | None = None) -> float | None:
        return _ratio(
            _median(results, section, SR, own or fig), _median(results, section, peer, fig)
        )

    def round_ratios(section: str, peer: str, fig: str, own: str | None = None) -> str:
        """The ratio in each round (both tools ran in it, one after the other): min-max."""
        mine, theirs = results.get((section, SR)), results.get((section, peer))
        if not mine or not theirs:
            return "-"
        pairs = zip(mine[own or fig].values, theirs[fig].values, strict=False)
        ratios = [m / t for m, t in pairs if t]
        if len(ratios) < 2:
            return "-"
        return f"{min(ratios):.2f}-{max(ratios):.2f} ({len(ratios)} rounds)"

    def pair(name: str, section: str, peer: str, fig: str, goals: tuple[float, float]) -> list[str]:
        return [
            check(
                f"{name} (in-process)",
                ratio(section, peer, fig, "op"),
                goals[0],
                spread=round_ratios(section, peer, fig, "op"),
            ),
            check(
                f"{name} (whole process)",
                ratio(section, peer, fig),
                goals[1],
                spread=round_ratios(section, peer, fig),
            ),
        ]

    def api_figure(endpoint: str, layout: str, fig: str) -> float | None:
        name = f"{endpoint}, 32 clients, {layout}"
        found = next((a for a in api if a.name == name), None)
        return None if found is None else getattr(found, fig)

    rows = [
        *pair(
            "PG restore full + incrementals wall, Strongroom / pgBackRest",
            "PG restore full+incr",
            PGBR,
            "wall",
            (0.6, 0.7),
        ),
        *pair("PG full wall, Strongroom / pgBackRest", "PG full", PGBR, "wall", (0.5, 0.55)),
    ]

    def incremental(section: str, update: str, stored_goal: float) -> list[str]:
        """Stored bytes and wall of one incremental section against pgBackRest's."""
        return [
            check(
                f"PG incremental {fig} after a 5 % {update}, Strongroom / pgBackRest",
                ratio(section, PGBR, fig),
                goal,
                spread=round_ratios(section, PGBR, fig),
            )
            for fig, goal in (("stored", stored_goal), ("wall", 1.0))
        ]

    for pattern in patterns:
        section = f"PG incremental ({pattern})"
        rows += incremental(section, f"{pattern} update", 0.3 if pattern == "spread" else 0.2)
    rows += [
        *pair(
            "MariaDB full wall, Strongroom / mariabackup\\|zstd",
            "MariaDB full",
            MB,
            "wall",
            (1.0, 1.0),
        ),
        check(f"Strongroom peak RSS (process tree), PG full at scale {scale}", rss_big, 150, "MB"),
        check(
            f"Strongroom peak RSS (process tree) growth, scale {small} → {scale}",
            _ratio(rss_big, rss_small),
            1.1,
            "x",
        ),
    ]
    for layout in API_LAYOUTS:
        for endpoint in API_ENDPOINTS:
            rows.append(
                check(
                    f"{endpoint} p99, 32 clients, {layout}",
                    api_figure(endpoint, layout, "p99_ms"),
                    25,
                    "ms",
                )
            )
            if endpoint == "GET /backups/{id}":
                rows.append(
                    check(
                        f"{endpoint} req/s, 32 clients, {layout}",
                        api_figure(endpoint, layout, "rps"),
                        3600,
                        at_least=True,
                    )
                )
    lines += [
        "",
        "| target | measured (median) | ratio in each round, min-max | goal | verdict |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    scale = int(os.environ.get("BENCH_SCALE", "150"))
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    restore_runs = int(os.environ.get("BENCH_RESTORE_RUNS", str(runs)))
    maria_scale = int(os.environ.get("BENCH_MARIADB_SCALE", str(max(1, scale // 3))))
    small = max(1, scale // 3)
    patterns = os.environ.get("BENCH_UPDATE", "spread,range").split(",")
    parts = set(os.environ.get("BENCH_ONLY", "pg,memory,mariadb,api").split(","))
    api_count = int(os.environ.get("BENCH_API_BACKUPS", "10000"))
    api_seconds = int(os.environ.get("BENCH_API_SECONDS", "10"))
    WORK.mkdir(parents=True, exist_ok=True)
    WORK.chmod(0o711)
    # Strongroom's store from an earlier run: its backups are not reused (about 10 GB a run).
    shutil.rmtree(WORK / "strongroom", ignore_errors=True)
    started = time.monotonic()
    results: Results = {}
    api: list[LatencyResult] = []
    if "pg" in parts:
        bench_postgres(scale, runs, restore_runs, patterns, results)
    if "memory" in parts:
        bench_memory(small, runs, results)
    if "mariadb" in parts:
        bench_mariadb(maria_scale, runs, restore_runs, results)
    if "api" in parts:
        api = bench_api(api_count, api_seconds, 32, "embedded")
        api += bench_api(api_count, api_seconds, 32, "embedded", SERVE_WORKERS)
        api += bench_api(api_count, api_seconds, 32, "scaled-out")
        api += bench_ceiling(ceiling_ids(), api_seconds, 32)
    text = report(
        results,
        api,
        scale,
        small,
        runs,
        time.monotonic() - started,
        api_count,
        maria_scale=maria_scale,
        restore_runs=restore_runs,
        patterns=patterns,
    )
    write_result(text, f"scale{scale}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
