"""Files the MariaDB engine writes or reads in a directory the instance's OS user owns:
links left there are refused or handled as links, never followed (no server)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from strongroom.engines.identity import InstanceIdentity
from strongroom.engines.mariadb import server, tools


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "victim"
    path.parent.mkdir()
    path.write_text("untouched\n")
    os.chmod(path, 0o600)
    return path


def test_tool_files_are_never_read_through_a_link(tmp_path: Path, victim: Path) -> None:
    lsn = tmp_path / "lsn"
    lsn.mkdir()
    (lsn / "xtrabackup_info").write_text("server_version = 10.11\n")
    assert tools.read_tool_file(lsn, "xtrabackup_info") == "server_version = 10.11\n"
    (lsn / "xtrabackup_checkpoints").symlink_to(victim)
    with pytest.raises(OSError):
        tools.read_tool_file(lsn, "xtrabackup_checkpoints")
    # The directory itself swapped for a link to another one.
    swapped = tmp_path / "swapped"
    swapped.symlink_to(victim.parent, target_is_directory=True)
    with pytest.raises(OSError):
        tools.read_tool_file(swapped, "victim")
    os.mkfifo(lsn / "fifo")  # would block a reader
    with pytest.raises(OSError):
        tools.read_tool_file(lsn, "fifo")


def test_the_option_file_is_never_written_through_a_link(tmp_path: Path, victim: Path) -> None:
    layout = server.Layout(tmp_path)
    server.write_config(
        layout, port=4406, bind_address="127.0.0.1", identity=InstanceIdentity.current()
    )
    layout.config.with_suffix(".tmp").symlink_to(victim)
    server.set_port(layout, 5507)
    assert victim.read_text() == "untouched\n"
    assert server.read_config(layout)["port"] == "5507"
    assert not layout.config.is_symlink()
    assert stat.S_IMODE(layout.config.stat().st_mode) == 0o644


def test_the_data_directory_is_closed_on_itself_not_through_a_link(
    tmp_path: Path, victim: Path
) -> None:
    layout = server.Layout(tmp_path)
    os.chmod(victim.parent, 0o755)
    layout.datadir.symlink_to(victim.parent, target_is_directory=True)
    with pytest.raises(OSError):
        server.close_datadir(layout)
    assert stat.S_IMODE(victim.parent.stat().st_mode) == 0o755
    layout.datadir.unlink()
    layout.datadir.mkdir(mode=0o755)
    server.close_datadir(layout)
    assert stat.S_IMODE(layout.datadir.stat().st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files away needs root")
def test_handing_a_home_over_changes_links_not_their_targets(
    victim: Path, request: pytest.FixtureRequest
) -> None:
    mysql = InstanceIdentity.lookup("mysql")
    if mysql is None:
        pytest.skip("no mysql user on this host")
    # pytest's tmp_path is 0700 all the way up: the server's user needs a way through.
    reachable = Path(tempfile.mkdtemp(prefix="sr-mdb-unit-"))
    request.addfinalizer(lambda: shutil.rmtree(reachable, ignore_errors=True))
    os.chmod(reachable, 0o711)
    layout = server.Layout(reachable / "home")
    server.prepare_home(layout, InstanceIdentity.current())
    layout.datadir.mkdir(mode=0o755)
    (layout.datadir / "table.ibd").write_bytes(b"x")
    (layout.datadir / "planted").symlink_to(victim)
    server.write_config(
        layout, port=4406, bind_address="127.0.0.1", identity=InstanceIdentity.current()
    )
    server.hand_over(layout, mysql)
    assert victim.stat().st_uid == 0
    assert (layout.datadir / "planted").lstat().st_uid == mysql.uid
    for path in (layout.home, layout.datadir, layout.files_dir, layout.datadir / "table.ibd"):
        assert path.stat().st_uid == mysql.uid, path
    for path in (layout.home, layout.datadir, layout.files_dir, layout.tmpdir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    options = server.read_config(layout)
    assert options["user"] == "mysql"
    assert options["secure_file_priv"] == str(layout.files_dir)
