"""Master keys: key files, fingerprints, data key wrapping."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from strongroom.pipeline import FormatError, MasterKey, WrongKeyError

RAW = bytes(range(32))


def test_master_key_repr_hides_bytes() -> None:
    key = MasterKey.from_bytes(RAW)
    for text in (repr(key), str(key)):
        assert key.key_id in text
        assert RAW.hex() not in text
        assert key.to_base64() not in text


def test_master_key_id_is_stable_fingerprint() -> None:
    assert MasterKey.from_bytes(RAW).key_id == MasterKey.from_bytes(RAW).key_id
    assert len(MasterKey.from_bytes(RAW).key_id) == 32
    assert MasterKey.generate().key_id != MasterKey.from_bytes(RAW).key_id


@pytest.mark.parametrize("raw", [b"", b"x" * 31, b"x" * 33])
def test_master_key_rejects_wrong_length(raw: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        MasterKey.from_bytes(raw)


def test_master_key_wrap_round_trip() -> None:
    key = MasterKey.generate()
    data_key = os.urandom(32)
    wrapped = key.wrap(data_key, backup_id="b1")
    assert len(base64.b64decode(wrapped)) == 60
    assert key.unwrap(wrapped, backup_id="b1") == data_key


def test_master_key_unwrap_with_other_key_is_wrong_key() -> None:
    wrapped = MasterKey.generate().wrap(os.urandom(32), backup_id="b1")
    with pytest.raises(WrongKeyError):
        MasterKey.generate().unwrap(wrapped, backup_id="b1")


def test_master_key_unwrap_for_other_backup_fails() -> None:
    key = MasterKey.generate()
    wrapped = key.wrap(os.urandom(32), backup_id="b1")
    with pytest.raises(WrongKeyError):
        key.unwrap(wrapped, backup_id="b2")


@pytest.mark.parametrize("wrapped", ["not base64!", base64.b64encode(b"short").decode()])
def test_master_key_unwrap_malformed_is_format_error(wrapped: str) -> None:
    with pytest.raises(FormatError):
        MasterKey.generate().unwrap(wrapped, backup_id="b1")


def test_master_key_load_or_create_makes_private_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    created = MasterKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert base64.b64decode(path.read_text().strip()) != b""
    assert MasterKey.load_or_create(path).key_id == created.key_id
    assert MasterKey.load(path).key_id == created.key_id
    assert [p.name for p in tmp_path.iterdir()] == ["master.key"]


def test_master_key_load_reads_base64_text(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(base64.b64encode(RAW).decode() + "\n")
    assert MasterKey.load(path).key_id == MasterKey.from_bytes(RAW).key_id


@pytest.mark.parametrize("content", [RAW, b"bm90IDMyIGJ5dGVz\n", b"%%%%"])
def test_master_key_load_rejects_other_content(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="master key file"):
        MasterKey.load(path)


def test_master_key_derive_key_is_per_purpose() -> None:
    key = MasterKey.from_bytes(RAW)
    a = key.derive_key(b"purpose a")
    assert len(a) == 32 and a != RAW
    assert a == MasterKey.from_bytes(RAW).derive_key(b"purpose a")
    assert a != key.derive_key(b"purpose b")
    with pytest.raises(ValueError):
        key.derive_key(b"")
