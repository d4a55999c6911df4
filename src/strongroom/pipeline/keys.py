"""Master keys: load, create, fingerprint, and wrap per-backup data keys.

A key file holds the 32-byte key as standard base64 text (44 characters) with optional
trailing whitespace. See docs/format.md section 2.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

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


def rotation_journal(key_file: Path) -> Path:
    """The file that records a master key rotation while it runs (``strongroom key
    rotate``); the service does not start while it exists."""
    return key_file.with_name(key_file.name + ".rotation")


def rotation_key(key_file: Path) -> Path:
    """Where the new master key waits until every manifest is rewritten under it."""
    return key_file.with_name(key_file.name + ".new")


# -- passphrase-sealed copies of a master key (docs/format.md section 2) ----------------

SEALED_KEY_FORMAT: Final = "strongroom-sealed-master-key"
SCRYPT_N: Final = 2**17  # 128 MiB of memory with r = 8, about 0.4 s here
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
# What a reader accepts: a file may ask for more work, not for unbounded memory.
MAX_SCRYPT_N: Final = 2**20
MAX_SCRYPT_R: Final = 32
MAX_SCRYPT_P: Final = 16
SALT_SIZE: Final = 16


def _sealed_ad(key_id: str) -> bytes:
    return b"strongroom sealed master key v1\x00" + key_id.encode("ascii")


def _passphrase_key(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=crypto.KEY_SIZE, n=n, r=r, p=p).derive(passphrase)


def seal_with_passphrase(key: MasterKey, passphrase: bytes) -> bytes:
    """A copy of ``key`` that only ``passphrase`` opens: a small JSON document (scrypt
    parameters, nonce, AES-256-GCM ciphertext of the raw key, the key id in clear)."""
    if not passphrase:
        raise ValueError("the passphrase is empty")
    salt, nonce = os.urandom(SALT_SIZE), crypto.random_nonce()
    kek = _passphrase_key(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    sealed = crypto.seal(crypto.aead_cipher(kek), nonce, key._raw, _sealed_ad(key.key_id))
    document = {
        "format": SEALED_KEY_FORMAT,
        "version": 1,
        "key_id": key.key_id,
        "kdf": {"name": "scrypt", "salt": _b64(salt), "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
        "cipher": "AES-256-GCM",
        "nonce": _b64(nonce),
        "sealed_key": _b64(sealed),
    }
    return (json.dumps(document, indent=2) + "\n").encode("ascii")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def is_sealed_key(content: bytes) -> bool:
    """Whether a key file's content is a sealed copy (JSON) rather than the raw key."""
    return content.lstrip().startswith(b"{")


def open_with_passphrase(content: bytes, passphrase: bytes) -> MasterKey:
    """The master key in a sealed copy. FormatError for a malformed document,
    WrongKeyError when the passphrase does not open it."""
    try:
        doc = json.loads(content)
        if doc.get("format") != SEALED_KEY_FORMAT or doc.get("version") != 1:
            raise FormatError("not a sealed Strongroom master key of version 1")
        kdf = doc["kdf"]
        n, r, p = (
            _bounded(kdf, "n", MAX_SCRYPT_N),
            _bounded(kdf, "r", MAX_SCRYPT_R),
            _bounded(kdf, "p", MAX_SCRYPT_P),
        )
        if kdf["name"] != "scrypt" or doc["cipher"] != "AES-256-GCM" or n & (n - 1) or n < 2:
            raise FormatError("sealed master key: unsupported key derivation or cipher")
        key_id = str(doc["key_id"])
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(doc["nonce"], validate=True)
        sealed = base64.b64decode(doc["sealed_key"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise FormatError(f"sealed master key is malformed: {exc}") from None
    if len(nonce) != crypto.NONCE_SIZE or len(sealed) != crypto.KEY_SIZE + crypto.TAG_SIZE:
        raise FormatError("sealed master key: nonce or sealed key has the wrong length")
    kek = _passphrase_key(passphrase, salt, n, r, p)
    try:
        raw = crypto.open_sealed(crypto.aead_cipher(kek), nonce, sealed, _sealed_ad(key_id))
    except crypto.AuthenticationFailed:
        raise WrongKeyError(
            "the passphrase does not open the sealed master key (or the file was altered)"
        ) from None
    return MasterKey(raw)


def _bounded(doc: dict[str, Any], name: str, most: int) -> int:
    value = doc[name]
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise ValueError(f"scrypt {name} must be an integer from 1 to {most}")
    return value


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
