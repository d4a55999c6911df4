"""Object keys: ``<container>/<path>``, validated the same way by every backend.

Rules (a key that breaks one raises :class:`~strongroom.storage.errors.InvalidKeyError`):

* The first segment is the container: 1 to 255 characters from ``A-Z a-z 0-9 _ . @ % + = : , -``,
  and not ``.`` or ``..``. S3 bucket names are stricter; :mod:`strongroom.storage.s3` checks
  those on top. A *new* container (one a request names) must also follow its store's
  naming rule: :func:`container_rule`.
* The rest is the object name: one or more ``/``-separated segments, none empty, ``.`` or
  ``..``; at most :data:`MAX_NAME_BYTES` bytes of UTF-8 (Swift's and S3's limit), each segment
  at most :data:`MAX_SEGMENT_BYTES` (a file name's limit on local filesystems), so that every
  backend accepts the same keys.
* No NUL or other control characters (Unicode category ``Cc``), no backslash, no lone
  surrogates, anywhere.
* Any other Unicode is allowed and kept as given: keys are not normalized (NFC and NFD forms
  of the same text are two keys), and compare and sort by code point, which is also UTF-8
  byte order, the order Swift and S3 list in.
* Percent signs are ordinary characters: ``%2e%2e`` is a literal name, never decoded. URLs made
  by ``url_for`` percent-encode keys, so such a name round-trips unchanged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from strongroom.storage.errors import InvalidKeyError

MAX_CONTAINER_LENGTH = 255
MAX_NAME_BYTES = 1024
MAX_SEGMENT_BYTES = 255
MAX_KEY_BYTES = MAX_CONTAINER_LENGTH + 1 + MAX_NAME_BYTES

_CONTAINER_RE = re.compile(r"[A-Za-z0-9_.@%+=:,-]+")


def validate_container(container: str) -> str:
    """Return ``container`` if it is an acceptable container name, else raise."""
    if not container:
        raise InvalidKeyError("container name is empty")
    if len(container) > MAX_CONTAINER_LENGTH:
        raise InvalidKeyError(f"container name is longer than {MAX_CONTAINER_LENGTH} characters")
    if container in (".", "..") or not _CONTAINER_RE.fullmatch(container):
        raise InvalidKeyError(
            f"container name {container!r} is not allowed "
            "(use letters, digits and _ . @ % + = : , -)"
        )
    return container


_S3_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def validate_s3_bucket(bucket: str) -> str:
    """Return ``bucket`` if it is a bucket name by today's S3 rules: 3 to 63 characters of
    lower-case letters, digits, ``.`` and ``-``, starting and ending with a letter or a
    digit, no ``..``, not an IPv4 address."""
    if not _S3_BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise InvalidKeyError(
            f"{bucket!r} is not a valid S3 bucket name: 3 to 63 characters of a-z 0-9 . -, "
            "starting and ending with a letter or a digit"
        )
    if re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", bucket):
        raise InvalidKeyError(f"{bucket!r} is not a valid S3 bucket name: it looks like an IP")
    return bucket


def container_rule(kind: str) -> Callable[[str], str]:
    """The rule a new container name must follow on a store of ``kind`` (``local``,
    ``swift``, ``s3``, ``memory``): S3's bucket rules for S3, the key rule elsewhere."""
    return validate_s3_bucket if kind == "s3" else validate_container


def _check_characters(text: str, what: str) -> None:
    if "\\" in text:
        raise InvalidKeyError(f"{what} contains a backslash")
    for char in text:
        if unicodedata.category(char) == "Cc":
            raise InvalidKeyError(f"{what} contains a control character (U+{ord(char):04X})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(f"{what} is not valid Unicode (lone surrogate)") from exc


def _check_segments(segments: list[str], what: str) -> None:
    for segment in segments:
        if segment == "":
            raise InvalidKeyError(f"{what} has an empty path segment (leading, trailing or '//')")
        if segment in (".", ".."):
            raise InvalidKeyError(f"{what} has {segment!r} as a path segment")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidKeyError(
                f"{what} has a path segment longer than {MAX_SEGMENT_BYTES} bytes"
            )


def validate_key(key: str) -> str:
    """Return ``key`` unchanged if it is a valid ``<container>/<name>`` key, else raise."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"key must be a string, not {type(key).__name__}")
    _check_characters(key, "key")
    container, sep, name = key.partition("/")
    validate_container(container)
    if not sep or not name:
        raise InvalidKeyError(f"key {key!r} names a container but no object")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidKeyError(f"object name is longer than {MAX_NAME_BYTES} bytes")
    _check_segments(name.split("/"), "key")
    return key


def split_key(key: str) -> tuple[str, str]:
    """Validate ``key`` and return ``(container, object_name)``."""
    container, _, name = validate_key(key).partition("/")
    return container, name


def split_prefix(prefix: str) -> tuple[str, str]:
    """Validate a listing prefix and return ``(container, name_prefix)``.

    A prefix is ``<container>`` (the whole container) or ``<container>/<name prefix>``; the
    container part is always a whole container name. Every segment of the name prefix but the
    last must be a valid segment; the last one may be empty or partial.
    """
    if not isinstance(prefix, str):
        raise InvalidKeyError(f"prefix must be a string, not {type(prefix).__name__}")
    _check_characters(prefix, "prefix")
    container, _, name_prefix = prefix.partition("/")
    validate_container(container)
    if len(name_prefix.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidKeyError(f"prefix is longer than {MAX_NAME_BYTES} bytes")
    if name_prefix:
        _check_segments(name_prefix.split("/")[:-1], "prefix")
    return container, name_prefix
