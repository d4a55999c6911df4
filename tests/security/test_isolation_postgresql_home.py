"""What root does in a managed PostgreSQL instance's home while its tenant, superuser of the
server and so able to run programs as its OS user, shapes that home against it.

A daemon the tenant left swaps names in the home while the instance is removed; the tenant
names another instance's port and a socket directory of its choice with ``ALTER SYSTEM``;
the tenant makes a file the service's tools print (``postmaster.opts``) as large as it
likes. Each test fails if the attack works.
"""

from __future__ import annotations

import os
import resource
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.engines import identity, process
from strongroom.engines.base import InstanceRequest
from strongroom.engines.postgresql import PostgresEngine, cluster, session
from support.postgresql import homes_dir
from support.tenant_daemons import assert_removal_survives_swaps

_probe = PostgresEngine()
WITH_PG = pytest.mark.skipif(
    _probe.detect() is None, reason="PostgreSQL server tools not installed"
)
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="OS users per instance need root")
CAP = 64 * 1024  # what the service keeps of a tool's output stream


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with homes_dir("strongroom-pghome-") as path:
        yield path


@pytest.fixture(scope="module")
def engine() -> PostgresEngine:
    return PostgresEngine(timeout=120)


# -- removing an instance -------------------------------------------------------------------


@pytest.mark.integration
@WITH_PG
@AS_ROOT
def test_removal_never_follows_or_blocks_on_what_a_daemon_of_the_tenant_swaps_in(
    base: Path, engine: PostgresEngine
) -> None:
    """A daemon of the instance's user exchanges directories of the home with links to a
    FIFO while the instance is removed: root must neither block opening the FIFO nor follow
    a link out of the home; the daemon (and another, idle one) is gone afterwards."""
    home = base / "swapped-home"
    conn = engine.create_instance(home, InstanceRequest("h"))
    assert_removal_survives_swaps(
        base, home, conn["os_user"], lambda: engine.destroy_instance(home, conn)
    )


# -- where a restarted server listens ----------------------------------------------------------


@pytest.mark.integration
@WITH_PG
def test_alter_system_cannot_move_a_server_onto_another_instances_port_or_socket(
    base: Path, engine: PostgresEngine
) -> None:
    """postgresql.auto.conf is read after the service's settings: a tenant's ``ALTER
    SYSTEM`` there must not decide where its server listens when the service starts it."""
    home_a, home_b = base / "port-a", base / "port-b"
    a = engine.create_instance(home_a, InstanceRequest("a"))
    b = engine.create_instance(home_b, InstanceRequest("b"))
    try:
        with session.connect(a) as c:
            c.execute(f"ALTER SYSTEM SET port = {int(b['port'])}")
            c.execute("ALTER SYSTEM SET unix_socket_directories = '/tmp'")
            c.execute("ALTER SYSTEM SET listen_addresses = '*'")
        engine.stop_instance(home_b, b)  # B's port is free for a while (a restart)
        engine.stop_instance(home_a, a)
        started = engine.start_instance(home_a, a)
        assert started["port"] == a["port"] and started["socket_dir"] == a["socket_dir"]
        assert not Path(f"/tmp/.s.PGSQL.{b['port']}").exists()
        assert cluster.port_is_free(engine.bind_address, int(b["port"]))
        with session.connect(started) as c:
            shown = {
                name: session.scalar(c, f"SHOW {name}")
                for name in ("port", "unix_socket_directories", "listen_addresses")
            }
        assert shown == {
            "port": str(a["port"]),
            "unix_socket_directories": a["socket_dir"],
            "listen_addresses": engine.bind_address,
        }
        assert engine.start_instance(home_b, b)["port"] == b["port"]
    finally:
        engine.destroy_instance(home_a, a)
        engine.destroy_instance(home_b, b)


# -- output of the service's tools ---------------------------------------------------------------


@pytest.mark.integration
@WITH_PG
def test_a_huge_postmaster_opts_costs_the_service_no_memory(
    base: Path, engine: PostgresEngine
) -> None:
    """``pg_ctl status`` prints data/postmaster.opts, which the tenant writes; the service
    asks for that status of every instance when it starts."""
    home = base / "opts"
    conn = engine.create_instance(home, InstanceRequest("o"))
    opts = Path(conn["data_dir"]) / "postmaster.opts"
    try:
        fd = os.open(opts, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)  # the tenant's own file
        with os.fdopen(fd, "wb") as fh:
            line = b"x" * 1023 + b"\n"
            for _ in range(200):
                fh.write(line * 1024)  # 200 MiB in all
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            started = engine.start_instance(home, conn)  # running: pg_ctl status, a reload
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before  # KiB
        assert started["port"] == conn["port"]
        assert peak < 50 << 20, f"{peak >> 20} MiB held while asking for the status"
        assert grown < 50 << 10, f"peak RSS grew by {grown >> 10} MiB"
    finally:
        engine.destroy_instance(home, conn)


def test_run_keeps_at_most_the_cap_of_each_stream() -> None:
    printer = (
        "import sys; sys.stdout.buffer.write(b'o' * 10_000_000);"
        "sys.stderr.buffer.write(b'e' * 5_000_000 + b'\\nthe last line\\n')"
    )
    result = process.run([sys.executable, "-c", printer], timeout=60)
    assert result.returncode == 0
    assert result.stdout == b"o" * CAP  # the head of stdout
    assert len(result.stderr) <= CAP and result.stderr.endswith("the last line\n")


SHOUT = "import sys; sys.stderr.buffer.write(b'e' * 5_000_000); sys.exit(3)"


def test_the_reason_of_a_failed_run_keeps_no_line_whole() -> None:
    """One stderr line without an end, as long as a tool (or a tenant's input it quotes)
    makes it."""
    with pytest.raises(process.ProcessError) as failed:
        process.run([sys.executable, "-c", SHOUT], timeout=60)
    assert "status 3" in str(failed.value) and len(str(failed.value)) < 8192


def test_the_stderr_of_a_streamed_tool_keeps_no_line_whole() -> None:
    with pytest.raises(process.ProcessError) as failed:
        process.stream_in([sys.executable, "-c", SHOUT], _Empty(), timeout=60)
    assert "status 3" in str(failed.value) and len(str(failed.value)) < 8192


class _Empty:
    def read(self, n: int = -1, /) -> bytes:
        return b""


def test_the_removal_walk_opens_and_follows_nothing(tmp_path: Path) -> None:
    """Links and FIFOs in a tree are removed, never opened or followed: what they point to
    stays."""
    tree = tmp_path / "home"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "file").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept").write_text("kept")
    os.mkfifo(tree / "fifo")
    os.symlink(outside, tree / "a" / "to-outside")
    os.symlink(tree / "fifo", tree / "to-fifo")
    identity.remove_tree(tree)
    assert not os.path.lexists(tree)
    assert (outside / "kept").read_text() == "kept"
    identity.remove_tree(tree)  # gone already: nothing to do


def test_a_tree_deeper_than_a_path_can_name_is_removed(tmp_path: Path) -> None:
    """A tenant can nest directories deeper than any path names (each made beneath the
    last): removing its home takes all of them, with a bounded number of descriptors."""
    tree = tmp_path / "home"
    tree.mkdir()
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(3000):  # 3000 levels of "dd/": 9000 bytes, past PATH_MAX
            os.mkdir("dd", dir_fd=fd)
            inner = os.open("dd", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.close(os.open("bottom", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    finally:
        os.close(fd)
    identity.remove_tree(tree)
    assert not os.path.lexists(tree)
