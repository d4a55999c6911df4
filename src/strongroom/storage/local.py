"""Local directory backend: a container is a top-level directory under ``root``.

Writes are atomic and durable: a temporary file in the target directory is written, fsynced,
renamed over the target, and the directory is fsynced. Temporary files start with
:data:`TEMP_PREFIX`; listings never show them, and keys whose segments start with it are
refused so that no object can be mistaken for one.

A local directory cannot hold both an object ``c/a`` and an object ``c/a/b``; such a put fails
with a (permanent) :class:`~strongroom.storage.errors.StorageError`.
"""

from __future__ import annotations

import builtins
import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import unquote, urlsplit

from strongroom.storage.base import TEMP_PREFIX, ObjectInfo, TemporaryObject
from strongroom.storage.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    StorageError,
    TransientStorageError,
)
from strongroom.storage.keys import split_key, split_prefix

_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT})


@contextmanager
def _os_errors(op: str, key: str) -> Iterator[None]:
    """Turn ``OSError`` into storage errors; messages name the key, not host paths."""
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        if op in ("get", "stat"):
            raise ObjectNotFoundError(f"no object {key!r}") from exc
        raise StorageError(
            f"local store: cannot {op} {key!r}: an object and a directory of the same name"
        ) from exc
    except FileExistsError as exc:
        raise StorageError(
            f"local store: cannot {op} {key!r}: an object and a directory of the same name"
        ) from exc
    except PermissionError as exc:
        raise StorageError(f"local store: permission denied to {op} {key!r}") from exc
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        if exc.errno in _TRANSIENT_ERRNOS:
            raise TransientStorageError(f"local store: cannot {op} {key!r}: {reason}") from exc
        raise StorageError(f"local store: cannot {op} {key!r}: {reason}") from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBackend:
    """Objects as files under ``root``; URLs are ``file:///abs/path``."""

    def __init__(self, root: Path | str) -> None:
        self._root = Path(root).absolute()

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, key: str) -> Path:
        container, name = split_key(key)
        segments = name.split("/")
        if any(s.startswith(TEMP_PREFIX) for s in [container, *segments]):
            raise InvalidKeyError(f"key segments must not start with {TEMP_PREFIX!r}")
        return self._root.joinpath(container, *segments)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with _os_errors("put", key):
            # A concurrent delete may remove a just-created empty parent: try again.
            for attempt in range(3):
                created = self._make_parents(path.parent)
                try:
                    self._write_atomically(path, data)
                except FileNotFoundError:
                    if attempt == 2:
                        raise
                    continue
                for directory in created:
                    _fsync_dir(directory)
                return

    def _make_parents(self, directory: Path) -> builtins.list[Path]:
        """Create ``directory`` and missing parents; return the dirs whose entries changed."""
        missing: builtins.list[Path] = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            if current == current.parent:
                break
            current = current.parent
        directory.mkdir(parents=True, exist_ok=True)
        return [m.parent for m in missing]

    @staticmethod
    def _write_atomically(path: Path, data: bytes) -> None:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        _fsync_dir(path.parent)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        with _os_errors("get", key):
            return path.read_bytes()

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        with _os_errors("stat", key):
            st = path.stat()
            if not path.is_file():
                raise FileNotFoundError(errno.ENOENT, "not a file")
        return ObjectInfo(key=key, size=st.st_size)

    def list(self, prefix: str) -> list[str]:
        return sorted(key for key, _ in self._scan(prefix, temporary=False))

    def list_temporary(self, prefix: str) -> builtins.list[TemporaryObject]:
        """Temporary files a killed writer left (see the module docstring)."""
        found = [
            TemporaryObject(key, entry.stat(follow_symlinks=False).st_mtime)
            for key, entry in self._scan(prefix, temporary=True)
        ]
        return sorted(found, key=lambda t: t.key)

    def delete_temporary(self, key: str) -> None:
        container, name = split_key(key)
        *dirs, last = name.split("/")
        if not last.startswith(TEMP_PREFIX) or any(
            s.startswith(TEMP_PREFIX) for s in [container, *dirs]
        ):
            raise InvalidKeyError(f"{key!r} is not a temporary object's key")
        path = self._root.joinpath(container, *dirs, last)
        with _os_errors("delete", key), suppress(FileNotFoundError):
            if not path.is_symlink() and path.is_file():
                path.unlink()

    def _scan(self, prefix: str, *, temporary: bool) -> builtins.list[tuple[str, os.DirEntry[str]]]:
        container, name_prefix = split_prefix(prefix)
        *dirs, _ = name_prefix.split("/")
        start = self._root.joinpath(container, *dirs)
        base = "/".join([container, *dirs])
        full = f"{container}/{name_prefix}"
        found: builtins.list[tuple[str, os.DirEntry[str]]] = []
        with _os_errors("list", prefix):
            self._walk(start, base, full, found, temporary)
        return found

    def _walk(
        self,
        directory: Path,
        base: str,
        full: str,
        out: builtins.list[tuple[str, os.DirEntry[str]]],
        temporary: bool,
    ) -> None:
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            key = f"{base}/{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                if entry.name.startswith(TEMP_PREFIX):
                    continue
                if full.startswith(key + "/") or key.startswith(full):
                    self._walk(Path(entry.path), key, full, out, temporary)
            elif (
                entry.is_file(follow_symlinks=False)
                and key.startswith(full)
                and entry.name.startswith(TEMP_PREFIX) == temporary
            ):
                out.append((key, entry))

    def delete(self, key: str) -> None:
        path = self._path(key)
        container_dir = self._root / split_key(key)[0]
        with _os_errors("delete", key):
            try:
                path.unlink()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return
            _fsync_dir(path.parent)
            parent = path.parent
            while parent != container_dir:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def url_for(self, key: str) -> str:
        return self._path(key).as_uri()

    def key_for_url(self, url: str) -> str | None:
        """The key for a ``file://`` URL under this store's root, ``None`` for other URLs.

        ``.``/``..`` segments are refused outright, and a path that leaves the root once
        symlinks are resolved raises :class:`InvalidKeyError`.
        """
        parts = urlsplit(url)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            return None
        if parts.query or parts.fragment:
            raise InvalidKeyError("file URL must not have a query or fragment")
        raw_path = unquote(parts.path)
        if "\x00" in raw_path:
            raise InvalidKeyError("file URL contains NUL")
        segments = raw_path.split("/")
        if any(s in (".", "..") for s in segments):
            raise InvalidKeyError("file URL must not contain '.' or '..' segments")
        path = Path(raw_path)
        if not path.is_absolute():
            return None
        relative = None
        for root in (self._root, self._root.resolve()):
            if path.is_relative_to(root):
                relative = path.relative_to(root)
                break
        if relative is None:
            return None
        key = "/".join(relative.parts)
        self._path(key)
        if not path.resolve().is_relative_to(self._root.resolve()):
            raise InvalidKeyError("file URL leaves the store root through a symlink")
        return key

    def check(self) -> None:
        try:
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"local store root cannot be created: {exc.strerror}") from exc
        if not os.access(self._root, os.W_OK | os.X_OK):
            raise StorageError("local store root is not writable")

    def close(self) -> None:
        return None
