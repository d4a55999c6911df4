"""One OS identity per managed instance.

When the service runs as root, each managed database server runs as a system user of its
own, created with the instance and removed with it. A tenant that becomes superuser of its
server (``COPY … FROM PROGRAM``, ``LOAD_FILE``, ``SELECT … INTO OUTFILE``) acts as that user,
which owns only its instance's home (0700): other instances, the service's key and metadata
stay out of reach. When the service is not root, everything runs as the service's own user
and no such separation exists (docs/security.md says so).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PREFIX = "sr-"
_NAME = re.compile(r"sr-[0-9a-f]{12}")
_LOCK_RETRIES = 20


class IdentityError(Exception):
    """An instance's OS user could not be created or removed."""


def name_for(home: Path) -> str:
    """The OS user name of the instance living in ``home`` (stable for that path)."""
    digest = hashlib.sha256(os.fsencode(Path(home).absolute())).hexdigest()
    return PREFIX + digest[:12]


@dataclass(frozen=True)
class InstanceIdentity:
    """Who an instance's processes run as; ``name`` is ``None`` for the service's own user."""

    name: str | None
    uid: int
    gid: int

    @classmethod
    def current(cls) -> InstanceIdentity:
        return cls(None, os.geteuid(), os.getegid())

    @classmethod
    def for_home(cls, home: Path) -> InstanceIdentity:
        """The identity of the instance in ``home``, created if it does not exist yet.
        Not root: the service's own user."""
        if os.geteuid() != 0:
            return cls.current()
        name = name_for(home)
        found = cls.lookup(name)
        if found is not None:
            return found
        _useradd(name)
        made = cls.lookup(name)
        if made is None:
            raise IdentityError(f"the OS user {name} was not created")
        return made

    @classmethod
    def lookup(cls, name: str | None) -> InstanceIdentity | None:
        if name is None:
            return cls.current()
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        return cls(name, entry.pw_uid, entry.pw_gid)

    @property
    def owner(self) -> tuple[int, int] | None:
        """``(uid, gid)`` to give files to, or ``None`` when no change is needed."""
        return (self.uid, self.gid) if self.name is not None else None

    def argv(self, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        """``argv`` run as this identity (``runuser``, an argv prefix, no shell)."""
        prefix = ["runuser", "-u", self.name, "--"] if self.name is not None else []
        return prefix + [str(a) for a in argv]

    def chown(self, path: Path) -> None:
        if self.owner is not None:
            os.chown(path, *self.owner, follow_symlinks=False)

    def private_dir(self, path: Path) -> None:
        """Make ``path`` (a new directory) 0700 and this identity's."""
        path.mkdir(mode=0o700, parents=False, exist_ok=True)
        st = path.lstat()
        if not os.path.isdir(path) or os.path.islink(path):
            raise IdentityError(f"{path} is not a directory")
        if self.owner is not None and (st.st_uid, st.st_gid) != self.owner:
            self.chown(path)
        os.chmod(path, 0o700)

    def remove(self) -> None:
        """Delete the OS user (and its group). Only the service's own ``sr-`` users."""
        if self.name is None or not _NAME.fullmatch(self.name):
            return
        if self.lookup(self.name) is None:
            return
        _retry_locked(["userdel", self.name])


def _useradd(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise IdentityError(f"refusing to create OS user {name!r}")
    _retry_locked(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            "--comment",
            "Strongroom managed instance",
            name,
        ],
        ok_if=lambda: InstanceIdentity.lookup(name) is not None,
    )


def _retry_locked(argv: list[str], ok_if: object = None) -> None:
    """Run a shadow-utils tool; another one holding /etc/passwd's lock is retried."""
    last = ""
    for attempt in range(_LOCK_RETRIES):
        result = subprocess.run(
            argv, capture_output=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, check=False
        )
        if result.returncode == 0:
            return
        last = result.stderr.decode("utf-8", "replace").strip()
        if callable(ok_if) and ok_if():
            return  # a concurrent call made it
        if "lock" not in last.lower():
            break
        time.sleep(0.05 * (attempt + 1))
    raise IdentityError(f"{argv[0]} failed: {last}")
