"""The multi-process directory: private, emptied at start, never a link or another's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from strongroom.observability import multiprocess


@pytest.fixture(autouse=True)
def keep_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # set then removed: whatever a test sets is undone afterwards
    monkeypatch.setenv(multiprocess.ENV, "unset")
    monkeypatch.delenv(multiprocess.ENV)


def test_the_directory_is_private_and_emptied_at_start(tmp_path: Path) -> None:
    first = multiprocess.prepare(tmp_path, role="api", port=9779)
    assert first == tmp_path / "metrics" / "api-9779"
    (first / "counter_123.db").write_bytes(b"old values")
    (first / "stale").mkdir()
    again = multiprocess.prepare(tmp_path, role="api", port=9779)
    assert again == first
    assert list(again.iterdir()) == []
    for path in (tmp_path / "metrics", again):
        assert path.stat().st_mode & 0o777 == 0o700


def test_roles_on_one_host_get_their_own_directories(tmp_path: Path) -> None:
    api = multiprocess.prepare(tmp_path, role="api", port=9779)
    (api / "counter_1.db").write_bytes(b"api values")
    worker = multiprocess.prepare(tmp_path, role="worker", port=9780)
    assert worker != api
    assert (api / "counter_1.db").exists()  # a worker's start does not wipe the API's files


def test_a_link_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("not the service's to remove")
    (tmp_path / "metrics").mkdir(mode=0o700)
    (tmp_path / "metrics" / "api-9779").symlink_to(elsewhere)
    with pytest.raises(multiprocess.MetricsDirError, match="not a directory"):
        multiprocess.prepare(tmp_path, role="api", port=9779)
    assert (elsewhere / "keep").exists()
    assert multiprocess.ENV not in os.environ


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the directory away")
    (tmp_path / "metrics").mkdir(mode=0o700)
    os.chown(tmp_path / "metrics", 65534, 65534)
    with pytest.raises(multiprocess.MetricsDirError, match="belongs to uid 65534"):
        multiprocess.prepare(tmp_path, role="api", port=9779)


def test_dead_processes_live_gauges_are_forgotten(tmp_path: Path) -> None:
    directory = multiprocess.prepare(tmp_path, role="api", port=9779)
    dead = 2**22 + 12345  # above pid_max's default: no such process
    (directory / f"gauge_livesum_{dead}.db").write_bytes(b"")
    (directory / f"gauge_livesum_{os.getpid()}.db").write_bytes(b"")
    (directory / f"counter_{dead}.db").write_bytes(b"")
    multiprocess.forget_dead_processes(directory)
    names = sorted(p.name for p in directory.iterdir())
    assert names == [f"counter_{dead}.db", f"gauge_livesum_{os.getpid()}.db"]


def test_a_data_dir_not_made_yet_is_made(tmp_path: Path) -> None:
    path = multiprocess.prepare(tmp_path / "new" / "data", role="serve", port=9779)
    assert path.is_dir()
