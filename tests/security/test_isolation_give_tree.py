"""Root gives an instance's home to its own OS user (a MariaDB instance made before instances
had users of their own, whose files were the shared ``mysql`` user's; a PostgreSQL restore
laid out as root). The old owner may still run programs: one that swaps a directory of the
home for a link, or leaves a hard link to a file elsewhere, must not make root give away
anything outside the home. Each test fails if the attack works.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.engines.errors import InstanceError
from strongroom.engines.identity import IdentityError, InstanceIdentity, give_tree, remove_tree
from strongroom.engines.mariadb import server
from support.tenant_daemons import as_tenant

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="gives files to other users: needs root")
NEW_OWNER = (54321, 54321)  # no process runs as it: only the files' owner is looked at
PAIRS = 64
ROUNDS = 30
EXCHANGE_ROUNDS = 20000

# Run as the old owner: each directory d<i> is exchanged with the link l<i> (to a directory
# outside the home) again and again, as a daemon left running would.
SWAPPER = r"""
import ctypes, os, sys
home, outside, pairs = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.chdir(home)
for i in range(pairs):
    os.mkdir(f"d{i}")
    open(f"d{i}/file", "w").write("x")
    os.symlink(outside, f"l{i}")
print("ready", flush=True)
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
while True:
    for i in range(pairs):
        libc.renameat2(AT_FDCWD, f"d{i}".encode(), AT_FDCWD, f"l{i}".encode(), RENAME_EXCHANGE)
"""


@pytest.fixture
def old_owner() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


@pytest.fixture
def base() -> Iterator[Path]:
    """0711, so the old owner reaches the home in it."""
    place = Path(tempfile.mkdtemp(prefix="strongroom-give-"))
    place.chmod(0o711)
    yield place
    remove_tree(place)


@pytest.fixture
def outside(base: Path) -> Path:
    """Root's directory and file outside the home."""
    place = base / "outside"
    place.mkdir()
    (place / "roots").write_text("root's")
    return place


@pytest.fixture
def home(base: Path, old_owner: pwd.struct_passwd) -> Iterator[Path]:
    place = base / "home"
    place.mkdir()
    place.chmod(0o777)  # the old owner keeps swapping once the home is given away
    os.chown(place, old_owner.pw_uid, old_owner.pw_gid)
    yield place


def _owners(place: Path) -> set[tuple[int, int]]:
    found = {(place.stat().st_uid, place.stat().st_gid)}
    for entry in place.rglob("*"):
        st = entry.lstat()
        found.add((st.st_uid, st.st_gid))
    return found


@AS_ROOT
def test_a_directory_swapped_for_a_link_meanwhile_never_leads_root_outside(
    home: Path, outside: Path, old_owner: pwd.struct_passwd
) -> None:
    daemon = as_tenant(
        old_owner, ["/usr/bin/python3", "-c", SWAPPER, str(home), str(outside), str(PAIRS)]
    )
    try:
        assert daemon.stdout is not None and daemon.stdout.readline().strip() == "ready"
        for _ in range(ROUNDS):
            give_tree(home, *NEW_OWNER)
            assert _owners(outside) == {(0, 0)}, "root gave away files outside the home"
    finally:
        daemon.kill()
        daemon.wait()
    assert (home.stat().st_uid, home.stat().st_gid) == NEW_OWNER


# Run as the old owner: the link s and a hard link h to another instance's file are
# exchanged again and again, so that a look at "s" may find the link and the chown that
# follows the hard link.
EXCHANGER = r"""
import ctypes, os, sys
home, other = sys.argv[1], sys.argv[2]
os.chdir(home)
os.symlink("/nonexistent", "s")
os.link(other, "h")
print("ready", flush=True)
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
while True:
    libc.renameat2(AT_FDCWD, b"s", AT_FDCWD, b"h", RENAME_EXCHANGE)
"""


@AS_ROOT
def test_a_link_exchanged_for_a_hard_link_meanwhile_gives_nothing_away(
    home: Path, base: Path, old_owner: pwd.struct_passwd
) -> None:
    other = base / "other-instance.ibd"
    other.write_text("another tenant's rows")
    os.chown(other, old_owner.pw_uid, old_owner.pw_gid)
    daemon = as_tenant(old_owner, ["/usr/bin/python3", "-c", EXCHANGER, str(home), str(other)])
    refused = 0
    try:
        assert daemon.stdout is not None and daemon.stdout.readline().strip() == "ready"
        for _ in range(EXCHANGE_ROUNDS):
            try:
                give_tree(home, *NEW_OWNER)
            except IdentityError:
                refused += 1  # it met the hard link as such: refused, as it should be
            assert other.stat().st_uid == old_owner.pw_uid, "another instance's file given away"
    finally:
        daemon.kill()
        daemon.wait()
    assert refused > 0


@AS_ROOT
def test_a_hard_link_to_a_file_elsewhere_is_not_given_away(
    home: Path, base: Path, old_owner: pwd.struct_passwd
) -> None:
    """Another instance's file, of the same shared user, linked into this home."""
    other = base / "other-instance.ibd"
    other.write_text("another tenant's rows")
    os.chown(other, old_owner.pw_uid, old_owner.pw_gid)
    subprocess.run(["ln", str(other), str(home / "mine.ibd")], user=old_owner.pw_uid, check=True)
    legacy = InstanceIdentity("sr-000000000000", *NEW_OWNER)
    with pytest.raises(InstanceError, match="other hard links"):
        server.chown_tree(home, legacy)
    assert other.stat().st_uid == old_owner.pw_uid
    with pytest.raises(IdentityError):
        give_tree(home, *NEW_OWNER)
    assert other.stat().st_uid == old_owner.pw_uid


@AS_ROOT
def test_the_tree_links_fifos_and_the_kept_name_are_handled_as_said(
    home: Path, outside: Path
) -> None:
    (home / "data" / "db").mkdir(parents=True)
    (home / "data" / "db" / "t.ibd").write_text("rows")
    (home / "my.cnf").write_text("[mariadbd]\n")
    os.mkfifo(home / "data" / "pipe")
    os.symlink(outside, home / "data" / "out")
    give_tree(home, *NEW_OWNER, keep=("my.cnf",))
    assert (home / "my.cnf").stat().st_uid == 0
    for path in (home, home / "data", home / "data" / "db", home / "data" / "db" / "t.ibd"):
        assert (path.stat().st_uid, path.stat().st_gid) == NEW_OWNER, path
    assert (home / "data" / "pipe").lstat().st_uid == NEW_OWNER[0]
    assert (home / "data" / "out").lstat().st_uid == NEW_OWNER[0]  # the link itself
    assert _owners(outside) == {(0, 0)}
