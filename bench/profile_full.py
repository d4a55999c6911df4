"""Profile Strongroom's PostgreSQL full backup with py-spy and its
restore (sampling, all threads, native frames).

    .venv/bin/python -m bench.profile_full          # BENCH_SCALE (default 10)
    BENCH_PROFILE_CHAIN=1 .venv/bin/python -m bench.profile_full

With ``BENCH_PROFILE_CHAIN=1`` the restore profiled is the benchmark's second round: the
table updated once (spread, then range) beforehand, then a full and two incrementals after
the same updates, restored as one chain (the realigned page deltas the benchmark's later
rounds restore).

Sets up a cluster like the benchmark's, records the ``bench.sr_task backup`` and ``restore``
processes with ``py-spy record --format raw --threads --idle --native``, and prints, per
thread, where its samples fall: leaf functions (self) and the product's functions on the
stack (inclusive). Idle samples are kept, so waiting on a pipe or a lock shows as such.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from bench import pg
from bench.common import BENCH_DIR, PYTHON, ROOT, WORK, log, run

PY_SPY = str(ROOT / ".venv" / "bin" / "py-spy")


def summarise(raw: str, top: int = 14) -> str:
    """Per thread: the leaf functions holding most samples (self), and the product's
    functions on the stacks holding most samples (inclusive)."""
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    names: dict[str, str] = {}
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        tid, _, name = frames[0].partition(": ")
        if name:
            names[tid] = name
        if len(frames) <= 3 and not any(".py:" in f for f in frames[1:]):
            tid = "interpreter exit"
        leaves[tid][frames[-1]] += count
        totals[tid] += count
        for function in {f.split(" (")[0] for f in frames if "strongroom/" in f}:
            inclusive[tid][function] += count
    out: list[str] = []
    for thread, total in totals.most_common():
        out.append(f"== {names.get(thread, thread)}: {total} samples")
        for leaf, count in leaves[thread].most_common(top // 2):
            out.append(f"  self {100 * count / total:5.1f}%  {leaf}")
        for name, count in inclusive[thread].most_common(top):
            out.append(f"  incl {100 * count / total:5.1f}%  {name}")
    return "\n".join(out)


def record(argv: list[str], raw: Path) -> str:
    native = os.environ.get("BENCH_PROFILE_NATIVE", "1") == "1"
    run(
        [
            PY_SPY,
            "record",
            "--format",
            "raw",
            "--threads",
            "--idle",
            "--rate",
            "250",
            *(["--native"] if native else []),
            "-o",
            raw,
            "--",
            *argv,
        ],
        env={"PYTHONPATH": str(ROOT)},
    )
    return summarise(raw.read_text())


def _update(cluster: pg.PgCluster, round_no: int, scale: int, *patterns: str) -> None:
    for pattern in patterns or ("spread", "range"):
        changed = pg.update_five_percent(cluster, round_no, pattern, scale)
        cluster.sql("CHECKPOINT")
        log(f"  updated {changed} rows of pgbench_accounts (5 %, {pattern})")


def main() -> int:
    scale = int(os.environ.get("BENCH_SCALE", "10"))
    WORK.mkdir(parents=True, exist_ok=True)
    WORK.chmod(0o711)
    cluster = pg.setup(scale, name="pg-profile")
    try:
        params = WORK / "pgprof-params.json"
        params.write_text(json.dumps(cluster.connection_params()))
        params.chmod(0o600)
        conn, state = WORK / "pgprof-conn.json", WORK / "pgprof-state.json"
        task = [PYTHON, "-m", "bench.sr_task"]
        run(
            [*task, "register", "--engine", "pg", "--params", params, "--out", conn, "--work", WORK]
        )
        state.unlink(missing_ok=True)

        def labelled(command: str, label: str, *extra: str) -> list[str]:
            return [
                *map(str, task),
                command,
                "--engine",
                "pg",
                "--conn",
                str(conn),
                "--state",
                str(state),
                "--label",
                label,
                *extra,
                "--work",
                str(WORK),
            ]

        chain = os.environ.get("BENCH_PROFILE_CHAIN") == "1"
        if chain:
            _update(cluster, 0, scale)
        log(f"profiling a full backup at scale {scale}")
        label = "profiled"
        text = "# full backup\n" + record(labelled("backup", label), WORK / "profile-full.txt")
        if chain:
            for pattern in ("spread", "range"):
                _update(cluster, 1, scale, pattern)
                run(
                    labelled("backup", f"incr-{pattern}", "--parent", label),
                    env={"PYTHONPATH": str(ROOT), "BENCH_PAGE_DELTAS": "1"},
                )
                label = f"incr-{pattern}"
        log(f"profiling the restore of {label}")
        home = WORK / "strongroom" / "instances" / "pg-profile-restore"
        restored = WORK / "pgprof-restored.json"
        text += f"\n\n# restore of {label}\n" + record(
            labelled("restore", label, "--home", str(home), "--out", str(restored)),
            WORK / "profile-restore.txt",
        )
        run(
            [*task, "destroy", "--engine", "pg", "--home", home, "--conn", restored, "--work", WORK]
        )
        out = BENCH_DIR / "results" / f"profile-{datetime.now():%Y-%m-%d-%H%M}-scale{scale}.txt"
        out.write_text(text + "\n")
        print(text)
        log(f"written {out.relative_to(ROOT)}")
    finally:
        pg.remove(cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())
