"""Passphrase-sealed copies of the master key (docs/format.md section 2)."""

from __future__ import annotations

import json

import pytest

from strongroom.pipeline.errors import FormatError, WrongKeyError
from strongroom.pipeline.keys import (
    MasterKey,
    is_sealed_key,
    open_with_passphrase,
    seal_with_passphrase,
)


@pytest.fixture(scope="module")
def key() -> MasterKey:
    return MasterKey.generate()


@pytest.fixture(scope="module")
def sealed(key: MasterKey) -> bytes:
    return seal_with_passphrase(key, b"a long passphrase")


def test_sealed_key_opens_with_its_passphrase_only(key: MasterKey, sealed: bytes) -> None:
    assert is_sealed_key(sealed) and not is_sealed_key(key.to_base64().encode())
    assert open_with_passphrase(sealed, b"a long passphrase") == key
    with pytest.raises(WrongKeyError, match="passphrase does not open"):
        open_with_passphrase(sealed, b"a long passphrasE")
    assert key.to_base64().encode() not in sealed


def test_sealed_key_document_fields(key: MasterKey, sealed: bytes) -> None:
    doc = json.loads(sealed)
    assert doc["format"] == "strongroom-sealed-master-key" and doc["version"] == 1
    assert doc["key_id"] == key.key_id
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["n"] == 2**17
    assert doc["cipher"] == "AES-256-GCM"


def test_sealed_key_with_an_edited_key_id_is_refused(sealed: bytes) -> None:
    doc = json.loads(sealed)
    doc["key_id"] = "0" * 32
    with pytest.raises(WrongKeyError):
        open_with_passphrase(json.dumps(doc).encode(), b"a long passphrase")


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["kdf"].update(n=2**30),  # memory a reader will not spend
        lambda d: d["kdf"].update(n=3),  # not a power of two
        lambda d: d["kdf"].update(r=True),
        lambda d: d.update(version=2),
        lambda d: d.update(cipher="AES-128-CBC"),
        lambda d: d.update(nonce="AAAA"),
        lambda d: d.update(sealed_key="not base64!"),
        lambda d: d.pop("kdf"),
    ],
)
def test_malformed_sealed_key_is_a_format_error(sealed: bytes, edit: object) -> None:
    doc = json.loads(sealed)
    edit(doc)  # type: ignore[operator]
    with pytest.raises(FormatError):
        open_with_passphrase(json.dumps(doc).encode(), b"a long passphrase")
    with pytest.raises(FormatError):
        open_with_passphrase(b"{not json", b"x")


def test_an_empty_passphrase_is_refused(key: MasterKey) -> None:
    with pytest.raises(ValueError):
        seal_with_passphrase(key, b"")
