"""Programs a tenant leaves running as its instance's OS user, and the removal of an
instance while one of them shapes the home against root (shared by the engines' isolation
suites)."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from strongroom.engines import identity

REMOVAL_DEADLINE = 60.0
PAIRS = 8

# Run as the instance's OS user: lays out the home, says "ready", then exchanges each
# directory d<i> with the link l<i> (to a FIFO) again and again, as a daemon would.
SWAPPER = r"""
import ctypes, os, sys
home, fifo, secret, outside, pairs = sys.argv[1:6]
os.chdir(home)
os.makedirs("tree/a/b/c")
open("tree/a/b/c/file", "w").write("x")
os.symlink(fifo, "to-fifo")
os.symlink(secret, "to-secret")
os.symlink(outside, "to-outside")
for i in range(int(pairs)):
    os.mkdir(f"d{i}")
    open(f"d{i}/file", "w").write("x")
    os.symlink(fifo, f"l{i}")
print("ready", flush=True)
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
while True:
    for i in range(int(pairs)):
        libc.renameat2(AT_FDCWD, f"d{i}".encode(), AT_FDCWD, f"l{i}".encode(), RENAME_EXCHANGE)
"""


def as_tenant(user: pwd.struct_passwd, argv: list[str]) -> subprocess.Popen[str]:
    """``argv`` run as ``user`` in a session of its own, as a tenant's daemon."""
    return subprocess.Popen(
        argv,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )


def os_users() -> set[str]:
    return {e.pw_name for e in pwd.getpwall() if e.pw_name.startswith("sr-")}


def assert_removal_survives_swaps(
    base: Path, home: Path, os_user: str, destroy: Callable[[], None]
) -> None:
    """A daemon of ``os_user`` exchanges directories of ``home`` with links to a FIFO while
    ``destroy`` removes the instance: root must neither block opening the FIFO nor follow a
    link out of the home; the daemon (and another, idle one) is gone afterwards."""
    user = pwd.getpwnam(os_user)
    fifo = base / f"tenant-fifo-{secrets.token_hex(4)}"
    os.mkfifo(fifo, 0o600)
    os.chown(fifo, user.pw_uid, user.pw_gid)
    secret = base / f"root-{secrets.token_hex(4)}.secret"
    secret.write_text("ROOT-ONLY-" + secrets.token_hex(8))
    secret.chmod(0o600)
    outside = base / f"root-dir-{secrets.token_hex(4)}"
    outside.mkdir()
    (outside / "inside").write_text("root's")
    args = [str(home), str(fifo), str(secret), str(outside), str(PAIRS)]
    swapper = as_tenant(user, ["/usr/bin/python3", "-c", SWAPPER, *args])
    sleeper = as_tenant(user, ["sleep", "1000"])
    done: list[BaseException | None] = []

    def remove() -> None:
        try:
            destroy()
            done.append(None)
        except BaseException as exc:
            done.append(exc)

    remover = threading.Thread(target=remove, daemon=True)
    try:
        assert swapper.stdout is not None and swapper.stdout.readline().strip() == "ready"
        remover.start()
        remover.join(REMOVAL_DEADLINE)
        blocked = remover.is_alive()
        if blocked:  # let root's open() of the FIFO return, so the thread can end
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            remover.join(10)
        assert not blocked, "removing the instance blocked (opened the tenant's FIFO)"
        assert done == [None], done
        assert not os.path.lexists(home)
        assert secret.read_text().startswith("ROOT-ONLY-") and secret.stat().st_uid == 0
        assert (outside / "inside").read_text() == "root's" and outside.stat().st_uid == 0
        assert swapper.wait(timeout=10) == -9 and sleeper.wait(timeout=10) == -9
        assert os_user not in os_users()
    finally:
        for daemon in (swapper, sleeper):
            daemon.kill()
            daemon.wait()
            if daemon.stdout is not None:
                daemon.stdout.close()
        if remover.is_alive():
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        fifo.unlink(missing_ok=True)
        left = identity.InstanceIdentity.lookup(os_user)
        if left is not None:  # the removal failed: its user must not outlive the test
            left.remove()
