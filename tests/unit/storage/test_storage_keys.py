from __future__ import annotations

import re

import pytest

from strongroom.storage.errors import InvalidKeyError
from strongroom.storage.keys import (
    MAX_CONTAINER_LENGTH,
    split_key,
    split_prefix,
    validate_container,
    validate_key,
)
from strongroom.storage.s3 import validate_bucket


@pytest.mark.parametrize(
    "key",
    [
        "c/x",
        "database_backups/5f1c0b/manifest.json",
        "a.b@c%d+e=f:g,h-i_j/x",
        "c/%2e%2e",
        "c/..hidden/.dotfile/...",
        "c/ünï/日本/🙂",
        "c/sp ace/q?h#",
        "x" * MAX_CONTAINER_LENGTH + "/y",
    ],
)
def test_validate_key_accepts(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "container name is empty"),
        ("c", "no object"),
        ("c/", "no object"),
        ("/c/x", "container name is empty"),
        ("c//x", "empty path segment"),
        ("c/x/", "empty path segment"),
        ("c/../x", "'..'"),
        ("c/./x", "'.'"),
        ("../x", "not allowed"),
        ("./x", "not allowed"),
        ("c/a\x00b", "control character (U+0000)"),
        ("c/a\tb", "control character (U+0009)"),
        ("c/a\x85b", "control character (U+0085)"),
        ("c/a\\b", "backslash"),
        ("c d/x", "not allowed"),
        ("c/d\ud800", "lone surrogate"),
        ("x" * (MAX_CONTAINER_LENGTH + 1) + "/y", "longer than 255"),
        ("c/" + "é" * 128, "segment longer than 255 bytes"),
        ("c/" + "/".join(["x" * 200] * 6), "longer than 1024 bytes"),
    ],
)
def test_validate_key_refuses(key: str, message: str) -> None:
    with pytest.raises(InvalidKeyError, match=re.escape(message)):
        validate_key(key)


def test_invalid_key_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        validate_key("c/..")


def test_validate_key_refuses_non_strings() -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(b"c/x")  # type: ignore[arg-type]


def test_split_key() -> None:
    assert split_key("c/a/b/c") == ("c", "a/b/c")
    with pytest.raises(InvalidKeyError):
        split_key("c/../x")


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("c", ("c", "")),
        ("c/", ("c", "")),
        ("c/a", ("c", "a")),
        ("c/a/", ("c", "a/")),
        ("c/a/b.", ("c", "a/b.")),
        ("c/a/..", ("c", "a/..")),
    ],
)
def test_split_prefix(prefix: str, expected: tuple[str, str]) -> None:
    assert split_prefix(prefix) == expected


@pytest.mark.parametrize("prefix", ["", "/a", "c/../a", "c//a", "c/a\x00", "bad name/a"])
def test_split_prefix_refuses(prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        split_prefix(prefix)


@pytest.mark.parametrize("name", [".", "..", "a/b", "a b", "a\\b", "é"])
def test_validate_container_refuses(name: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_container(name)


@pytest.mark.parametrize("bucket", ["abc", "database_backups", "a.b-c", "t-0123456789ab", "a" * 63])
def test_validate_bucket_accepts(bucket: str) -> None:
    assert validate_bucket(bucket) == bucket


@pytest.mark.parametrize(
    "bucket", ["ab", "a" * 64, "ABC", "-abc", "abc-", "a..b", "192.168.1.1", "a:b", "a%b"]
)
def test_validate_bucket_refuses(bucket: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_bucket(bucket)
