"""The master key given to an offline command: the raw key file, or a passphrase-sealed
copy of it (``strongroom key export``) opened with a passphrase file."""

from __future__ import annotations

from pathlib import Path

from strongroom.pipeline.errors import FormatError
from strongroom.pipeline.keys import MasterKey, is_sealed_key, open_with_passphrase


class KeyFileError(Exception):
    """A key file or passphrase file that cannot be used; the message says why."""


def read_passphrase(path: Path) -> bytes:
    """The passphrase in ``path``: its content without one trailing line end."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"passphrase file {path}: {exc.strerror}") from None
    passphrase = text.removesuffix(b"\n").removesuffix(b"\r")
    if not passphrase:
        raise KeyFileError(f"passphrase file {path} is empty")
    return passphrase


def load_master_key(path: Path, passphrase_file: Path | None) -> MasterKey:
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"key file {path}: {exc.strerror}") from None
    if is_sealed_key(content):
        if passphrase_file is None:
            raise KeyFileError(
                f"key file {path} is sealed with a passphrase: give --passphrase-file"
            )
        try:
            return open_with_passphrase(content, read_passphrase(passphrase_file))
        except FormatError as exc:
            raise KeyFileError(f"key file {path}: {exc}") from None
    try:
        return MasterKey.from_base64(content)
    except ValueError as exc:
        raise KeyFileError(f"key file {path}: {exc}") from None
