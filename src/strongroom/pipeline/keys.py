"""Master keys: load, create, fingerprint, and wrap per-backup data keys.

A key file holds the 32-byte key as standard base64 text (44 characters) with optional
trailing whitespace. See docs/format.md section 2.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import stat
from pathlib import Path
from typing import Final

from strongroom.pipeline import crypto
from strongroom.pipeline.errors import FormatError, WrongKeyError

log = logging.getLogger(__name__)

WRAPPED_KEY_SIZE: Final = crypto.NONCE_SIZE + crypto.KEY_SIZE + crypto.TAG_SIZE


def wrap_ad(backup_id: str) -> bytes:
    """Associated data of a wrapped data key: ``utf8(backup_id) || 0x00 || b"datakey"``."""
    return backup_id.encode("utf-8") + b"\x00datakey"


class MasterKey:
    """A 32-byte AES-256 master key. Its bytes never appear in ``repr`` or ``str``."""

    __slots__ = ("_cipher", "_raw", "key_id")

    def __init__(self, raw: bytes) -> None:
        self._raw = crypto.check_key(raw)
        self._cipher = crypto.aead_cipher(self._raw)
        self.key_id: str = crypto.key_id(self._raw)

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MasterKey):
            return NotImplemented
        return self.key_id == other.key_id

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("MasterKey cannot be pickled")

    # -- construction -------------------------------------------------------------------

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(crypto.random_key())

    @classmethod
    def from_bytes(cls, raw: bytes) -> MasterKey:
        """From the raw 32 key bytes; ValueError for any other length."""
        return cls(raw)

    @classmethod
    def from_base64(cls, text: str | bytes) -> MasterKey:
        """From base64 text (the key file format, also handy for an environment variable)."""
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("master key is not valid base64") from exc
        if len(raw) != crypto.KEY_SIZE:
            raise ValueError(f"master key must decode to {crypto.KEY_SIZE} bytes, got {len(raw)}")
        return cls(raw)

    def to_base64(self) -> str:
        """The key file text (without newline). Secret: never log it."""
        return base64.b64encode(self._raw).decode("ascii")

    @classmethod
    def load(cls, path: Path) -> MasterKey:
        """Read a key file; ValueError if its content is not a base64 32-byte key."""
        path = Path(path)
        mode = path.stat().st_mode
        if stat.S_IMODE(mode) & 0o077:
            log.warning("master key file %s is readable by group or others", path)
        try:
            return cls.from_base64(path.read_bytes())
        except ValueError as exc:
            raise ValueError(f"master key file {path}: {exc}") from None

    @classmethod
    def load_or_create(cls, path: Path) -> MasterKey:
        """Load ``path``; if it does not exist, create it with a new key, mode 0600.

        Creation is atomic: the key is written and fsynced under a temporary name in the
        same directory, then hard-linked to ``path``. If another process created ``path``
        first, its key is loaded and ours discarded.
        """
        path = Path(path)
        if path.exists():
            return cls.load(path)
        key = cls.generate()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.write(fd, (key.to_base64() + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return cls.load(path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_dir(path.parent)
        return key

    def derive_key(self, info: bytes) -> bytes:
        """A 32-byte subkey for another purpose (HKDF-SHA256, no salt, ``info``).

        Use a distinct ``info`` per purpose; the master key itself never leaves this object.
        """
        if not info:
            raise ValueError("derive_key needs a non-empty info label")
        return crypto.hkdf(self._raw, info)

    # -- data keys ----------------------------------------------------------------------

    def wrap(self, data_key: bytes, *, backup_id: str) -> str:
        """Seal a data key for ``backup_id``; returns base64 text for the manifest."""
        data_key = crypto.check_key(data_key)
        nonce = crypto.random_nonce()
        sealed = crypto.seal(self._cipher, nonce, data_key, wrap_ad(backup_id))
        return base64.b64encode(nonce + sealed).decode("ascii")

    def unwrap(self, wrapped: str, *, backup_id: str) -> bytes:
        """Inverse of :meth:`wrap`.

        Raises FormatError if ``wrapped`` is not a well-formed wrapped key, and WrongKeyError
        if it does not authenticate: it was wrapped under another master key (or for another
        backup id, or altered; :func:`~strongroom.pipeline.reader.open_manifest` tells these
        apart with the key id).
        """
        try:
            blob = base64.b64decode(wrapped, validate=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise FormatError(f"backup {backup_id}: wrapped data key is not base64") from exc
        if len(blob) != WRAPPED_KEY_SIZE:
            raise FormatError(
                f"backup {backup_id}: wrapped data key is {len(blob)} bytes, "
                f"expected {WRAPPED_KEY_SIZE}"
            )
        nonce, sealed = blob[: crypto.NONCE_SIZE], blob[crypto.NONCE_SIZE :]
        try:
            return crypto.open_sealed(self._cipher, nonce, sealed, wrap_ad(backup_id))
        except crypto.AuthenticationFailed:
            raise WrongKeyError(
                f"backup {backup_id}: data key does not unwrap with master key {self.key_id} "
                "(wrong master key, or the wrapped key or backup id was altered)"
            ) from None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
