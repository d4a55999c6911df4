"""Instance OS users never inherit what a removed one left behind.

A tenant that was superuser of a removed instance may have left files of its OS user on the
host (a setuid copy of a shell in /tmp, say) while it keeps another instance. If the next
instance's user got the freed uid, those files would be that user's, and with them its data.
These tests create and remove real OS users (root only) and fail if a uid comes back or if
what the old user left in the host's temporary directories outlives it.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.engines import identity
from strongroom.engines.identity import InstanceIdentity, name_for

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="OS users per instance need root")
pytestmark = [AS_ROOT]


def _drop_account(name: str) -> None:
    for argv in (["userdel", name], ["groupdel", name]):
        subprocess.run(argv, capture_output=True, check=False)


@pytest.fixture
def accounts() -> Iterator[list[str]]:
    """Names of OS users and groups a test made; all gone afterwards."""
    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            _drop_account(name)


def _create(home: Path, accounts: list[str]) -> InstanceIdentity:
    accounts.append(name_for(home))
    made = InstanceIdentity.for_home(home)
    assert made.name == name_for(home)
    return made


def _in_range(n: int) -> bool:
    return identity.ID_FIRST <= n < identity.ID_FIRST + identity.ID_COUNT


def test_a_removed_instances_uid_is_not_handed_out_again(
    tmp_path: Path, accounts: list[str]
) -> None:
    removed: list[InstanceIdentity] = []
    for i in range(4):
        made = _create(tmp_path / f"home-{i}", accounts)
        assert made.uid not in {r.uid for r in removed}, f"uid {made.uid} came back"
        assert grp.getgrgid(made.gid).gr_name == made.name
        made.remove()
        assert InstanceIdentity.lookup(made.name) is None
        with pytest.raises(KeyError):
            grp.getgrnam(str(made.name))
        removed.append(made)
    for made in removed:
        assert _in_range(made.uid) and made.gid == made.uid


def test_what_the_user_left_in_temporary_directories_goes_with_it(
    tmp_path: Path, accounts: list[str]
) -> None:
    made = _create(tmp_path / "home", accounts)
    assert made.owner is not None
    tag = f"strongroom-test-{secrets.token_hex(6)}"
    tmp, var_tmp, shm = Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")
    roots_file, roots_dir = tmp / f"{tag}-roots", tmp / f"{tag}-roots-dir"
    theirs = {
        "file": tmp / f"{tag}-file",
        "shell": tmp / f"{tag}-sh",
        "link": tmp / f"{tag}-link",
        "dir link": tmp / f"{tag}-dirlink",
        "dir": tmp / f"{tag}-dir",
        "fifo": tmp / f"{tag}-fifo",
        "var/tmp": var_tmp / f"{tag}-file",
    }
    if shm.is_dir():
        theirs["shm"] = shm / f"{tag}-file"
    try:
        roots_file.write_text("root's\n")
        roots_dir.mkdir()
        (roots_dir / "inside").write_text("root's too\n")
        for key in ("file", "var/tmp", "shm"):
            if key in theirs:
                theirs[key].write_text("left behind\n")
                os.chown(theirs[key], *made.owner)
        shutil.copyfile("/bin/bash", theirs["shell"])
        os.chown(theirs["shell"], *made.owner)
        os.chmod(theirs["shell"], 0o4755)  # after the chown, which clears the bit
        os.mkfifo(theirs["fifo"])  # removed, never opened
        os.symlink(roots_file, theirs["link"])
        os.symlink(roots_dir, theirs["dir link"])
        for key in ("fifo", "link", "dir link"):
            os.chown(theirs[key], *made.owner, follow_symlinks=False)
        theirs["dir"].mkdir()
        (theirs["dir"] / "deeper").mkdir()
        (theirs["dir"] / "deeper" / "file").write_text("x")
        os.symlink(roots_dir, theirs["dir"] / "deeper" / "to-roots")
        for path in (theirs["dir"], theirs["dir"] / "deeper", theirs["dir"] / "deeper" / "file"):
            os.chown(path, *made.owner)
        assert theirs["shell"].stat().st_mode & stat.S_ISUID

        made.remove()

        assert InstanceIdentity.lookup(made.name) is None
        left = [key for key, path in theirs.items() if os.path.lexists(path)]
        assert left == []
        assert roots_file.read_text() == "root's\n" and roots_file.stat().st_uid == 0
        assert (roots_dir / "inside").read_text() == "root's too\n"
        assert roots_dir.stat().st_uid == 0
    finally:
        for path in (*theirs.values(), roots_file):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                path.unlink()
        for path in (theirs["dir"], roots_dir):
            shutil.rmtree(path, ignore_errors=True)


def test_a_uid_or_gid_already_taken_is_passed_over(
    tmp_path: Path, accounts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    suffix = secrets.token_hex(4)
    user, group = f"srt-u{suffix}", f"srt-g{suffix}"
    taken_uid, taken_gid = identity._pick_id(), identity._pick_id()
    accounts += [user, group]
    subprocess.run(
        ["groupadd", "--system", "--gid", str(taken_gid), group], check=True, capture_output=True
    )
    useradd = ["useradd", "--system", "--no-log-init", "--no-create-home", "--user-group"]
    subprocess.run([*useradd, "--uid", str(taken_uid), user], check=True, capture_output=True)
    assert pwd.getpwnam(user).pw_uid == taken_uid
    pick = identity._pick_id
    picks = iter([taken_uid, taken_gid])
    tried: list[int] = []

    def first_the_taken_ones() -> int:
        n = next(picks, None)
        n = pick() if n is None else n
        tried.append(n)
        return n

    monkeypatch.setattr(identity, "_pick_id", first_the_taken_ones)
    made = _create(tmp_path / "home", accounts)
    assert tried[:2] == [taken_uid, taken_gid]
    assert made.uid not in (taken_uid, taken_gid) and made.uid == made.gid
    assert _in_range(made.uid)
    assert pwd.getpwuid(taken_uid).pw_name == user
    assert grp.getgrgid(taken_gid).gr_name == group


def test_a_group_left_by_an_interrupted_creation_does_not_stop_the_next(
    tmp_path: Path, accounts: list[str]
) -> None:
    home = tmp_path / "home"
    name = name_for(home)
    accounts.append(name)
    # a group of the instance's name with an id from the system range, no user
    subprocess.run(["groupadd", "--system", name], check=True, capture_output=True)
    made = _create(home, accounts)
    assert _in_range(made.uid) and made.gid == made.uid
    assert grp.getgrnam(name).gr_gid == made.gid
    made.remove()
    with pytest.raises(KeyError):
        grp.getgrnam(name)


def test_only_instance_users_are_removed(accounts: list[str]) -> None:
    nobody = InstanceIdentity.lookup("nobody")
    assert nobody is not None
    nobody.remove()
    assert InstanceIdentity.lookup("nobody") is not None


# -- in a user namespace that maps fewer ids (a container) ---------------------------------------
def _maps(monkeypatch: pytest.MonkeyPatch, spans: list[tuple[int, int]]) -> None:
    monkeypatch.setattr(identity, "_mapped", lambda path: spans)


def test_the_range_of_our_own_when_the_namespace_maps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _maps(monkeypatch, [(0, 1 << 32)])
    assert identity._id_window() == (identity.ID_FIRST, identity.ID_COUNT)
    assert _in_range(identity._pick_id())


def test_a_namespace_mapping_fewer_ids_gives_the_widest_part_above_65536(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unprivileged LXD/Incus container maps 0..999,999,999: an id outside the map cannot
    own a file (chown fails with EINVAL), so the ids are drawn inside it."""
    _maps(monkeypatch, [(0, 1_000_000_000)])
    assert identity._id_window() == (1 << 16, 1_000_000_000 - (1 << 16))
    for _ in range(50):
        assert (1 << 16) <= identity._pick_id() < 1_000_000_000


def test_a_namespace_of_65536_ids_leaves_the_choice_to_useradd(
    tmp_path: Path, accounts: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rootless containers map 65,536 ids: too few for a range of our own, so useradd picks
    a system uid as it always did (inside the map)."""
    _maps(monkeypatch, [(0, 1 << 16)])
    assert identity._id_window() is None
    made = _create(tmp_path / "in-a-small-namespace", accounts)
    assert made.uid < (1 << 16) and made.uid != 0
    assert grp.getgrgid(made.gid).gr_name == made.name
    made.remove()
    assert InstanceIdentity.lookup(made.name) is None


def test_the_users_processes_go_with_it(tmp_path: Path, accounts: list[str]) -> None:
    """A tenant that was superuser of its server may have started programs of its own in
    a session of their own, which outlive the server: they are killed with the user (and
    userdel, which refuses a user in use, succeeds)."""
    made = _create(tmp_path / "with-a-daemon", accounts)
    daemons = [
        subprocess.Popen(
            ["sleep", "600"],
            user=made.uid,
            group=made.gid,
            extra_groups=[],
            start_new_session=True,
        )
        for _ in range(3)
    ]
    bystander = subprocess.Popen(["sleep", "600"])  # root's: left alone
    try:
        made.remove()
        assert InstanceIdentity.lookup(made.name) is None
        assert all(d.wait(timeout=10) == -9 for d in daemons)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        for d in daemons:
            d.kill()
            d.wait()
