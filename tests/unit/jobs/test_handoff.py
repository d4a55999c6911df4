"""The job hand-off of `strongroom serve --workers N` on real Unix sockets: an API process's
``HandOffJobQueue`` sends job ids to the serving process's ``JobInbox``."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from strongroom.domain.model import JobId
from strongroom.jobs.handoff import (
    LEFTOVER_AFTER_SECONDS,
    SOCKET_NAME,
    HandOffJobQueue,
    JobInbox,
    remove_leftover_staging,
)


class Received:
    """Stands in for the in-process pool: records what the inbox submits."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.arrived = threading.Event()

    def submit(self, job_id: JobId, route: str = "local") -> None:
        self.ids.append(job_id)
        self.arrived.set()

    def wait_for(self, count: int) -> list[str]:
        deadline = time.monotonic() + 10
        while len(self.ids) < count and time.monotonic() < deadline:
            self.arrived.wait(0.1)
            self.arrived.clear()
        return self.ids


def job() -> JobId:
    return JobId(str(uuid.uuid4()))


def test_the_socket_is_the_owners_from_the_start_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bound in a private directory and renamed into place, over a file a killed process
    left. The process's umask is not changed for it: other threads create files meanwhile
    (a directory made then got mode 0600)."""
    path = tmp_path / SOCKET_NAME
    path.write_text("left by a killed process")
    previous = os.umask(0)

    def changed(_mask: int) -> int:
        raise AssertionError("the process's umask was changed")

    try:
        monkeypatch.setattr(os, "umask", changed)
        inbox = JobInbox(path, Received())
        monkeypatch.undo()
    finally:
        os.umask(previous)
    try:
        assert path.is_socket()
        assert path.stat().st_mode & 0o777 == 0o600
        assert sorted(p.name for p in tmp_path.iterdir()) == [SOCKET_NAME]  # staging removed
    finally:
        inbox.close()
    assert not path.exists()


def test_an_empty_datagram_does_not_stop_the_inbox(tmp_path: Path) -> None:
    received = Received()
    inbox = JobInbox(tmp_path / SOCKET_NAME, received)
    inbox.start()
    try:
        sender = HandOffJobQueue(inbox.path)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
            other.sendto(b"", str(inbox.path))
        first = job()
        sender.submit(first)
        assert received.wait_for(1) == [first]
        sender.shutdown()
    finally:
        inbox.close()


def test_a_full_inbox_makes_a_send_wait_without_spinning_then_give_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing reads the inbox: its queue fills, and a hand-off waits for the timeout
    asleep (a send on an unconnected socket polled as writable and spun a core for it),
    logs the job left QUEUED, and returns."""
    inbox = JobInbox(tmp_path / SOCKET_NAME, Received())  # not started: nothing reads
    sender = HandOffJobQueue(inbox.path, timeout=1)
    try:
        cpu = time.process_time()
        with caplog.at_level(logging.ERROR, logger="strongroom.jobs.handoff"):
            for _ in range(200):  # more than any queue length the kernel allows
                sender.submit(job())
                if caplog.records:
                    break
        assert time.process_time() - cpu < 0.5
        assert "not handed to the job process" in caplog.records[0].getMessage()
    finally:
        sender.shutdown()
        inbox.close()


def test_a_sender_reaches_an_inbox_made_anew_at_the_same_path(tmp_path: Path) -> None:
    path = tmp_path / SOCKET_NAME
    first, second = Received(), Received()
    sender = HandOffJobQueue(path)
    old = JobInbox(path, first)
    old.start()
    before, after = job(), job()
    sender.submit(before)
    assert first.wait_for(1) == [before]
    old.close()
    new = JobInbox(path, second)
    new.start()
    try:
        sender.submit(after)
        assert second.wait_for(1) == [after]
    finally:
        sender.shutdown()
        new.close()


def test_a_data_dir_too_deep_for_a_socket_address_gets_a_private_one_removed_at_close(
    tmp_path: Path,
) -> None:
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    inbox = JobInbox.in_data_dir(deep, Received())
    private = inbox.path.parent
    try:
        assert private != deep
        assert private.stat().st_mode & 0o777 == 0o700
        assert inbox.path.stat().st_mode & 0o777 == 0o600
    finally:
        inbox.close()
    assert not private.exists()


def test_senders_in_many_threads_reach_an_inbox_made_anew(tmp_path: Path) -> None:
    """The inbox is made anew at its path while request threads hand jobs over at once:
    the first send on the old connection is refused, the next ones find it closed or not
    connected, and every one of them connects again and is delivered."""
    path = tmp_path / SOCKET_NAME
    sender = HandOffJobQueue(path)
    inbox = JobInbox(path, Received())
    delivered = 0
    try:
        for _ in range(20):
            sender.submit(job())  # connected to the current inbox
            inbox.close()
            received = Received()
            inbox = JobInbox(path, received)
            inbox.start()
            ids = [job() for _ in range(8)]
            start = threading.Barrier(len(ids))

            def hand_over(job_id: JobId, start: threading.Barrier = start) -> None:
                start.wait()
                sender.submit(job_id)

            threads = [threading.Thread(target=hand_over, args=(i,)) for i in ids]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(received.wait_for(len(ids))) == sorted(ids)
            delivered += len(ids)
    finally:
        sender.shutdown()
        inbox.close()
    assert delivered == 160


def test_a_staging_directory_a_killed_process_left_is_removed_at_the_next_start(
    tmp_path: Path,
) -> None:
    """A process killed between binding and renaming leaves ``.jobs-*`` (with its bound
    socket) in the data dir. The next inbox removes it once it is old; a young one may be
    another process's, binding now, and a link to a directory elsewhere is not followed."""
    old = time.time() - LEFTOVER_AFTER_SECONDS - 5
    left = tmp_path / ".jobs-killed"
    left.mkdir(mode=0o700)
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    bound.bind(str(left / "s"))
    bound.close()
    os.utime(left, (old, old))
    young = tmp_path / ".jobs-binding"
    young.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "s").write_text("not the service's")
    link = tmp_path / ".jobs-link"
    link.symlink_to(elsewhere)
    os.utime(link, (old, old), follow_symlinks=False)

    inbox = JobInbox(tmp_path / SOCKET_NAME, Received())
    inbox.close()

    assert not left.exists()
    assert young.is_dir()
    assert link.is_symlink() and (elsewhere / "s").read_text() == "not the service's"
    leftovers = sorted(p.name for p in tmp_path.glob(".jobs-*"))
    assert leftovers == [".jobs-binding", ".jobs-link"]


def test_a_young_staging_directory_is_removed_once_it_is_old(tmp_path: Path) -> None:
    (tmp_path / ".jobs-late").mkdir()
    now = time.time()
    assert remove_leftover_staging(tmp_path, now=now) == []
    assert remove_leftover_staging(tmp_path, now=now + LEFTOVER_AFTER_SECONDS + 1) == [".jobs-late"]
    assert not (tmp_path / ".jobs-late").exists()
