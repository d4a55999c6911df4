"""What the offline commands accept before they read a byte of a backup: key files,
passphrase files, store URLs and targets."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from strongroom.offline.keyfile import KeyFileError, load_master_key, read_passphrase
from strongroom.offline.locate import LocateError, container_of, manifest_key, open_store
from strongroom.offline.restore import TargetError, directory_target, sqlite_target
from strongroom.pipeline.keys import MasterKey, seal_with_passphrase


def test_key_file_raw_or_sealed(tmp_path: Path) -> None:
    key = MasterKey.generate()
    raw = tmp_path / "master.key"
    raw.write_text(key.to_base64() + "\n")
    assert load_master_key(raw, None) == key
    sealed = tmp_path / "sealed.key"
    sealed.write_bytes(seal_with_passphrase(key, b"pw"))
    passphrase = tmp_path / "pass"
    passphrase.write_bytes(b"pw\r\n")
    assert load_master_key(sealed, passphrase) == key
    with pytest.raises(KeyFileError, match="--passphrase-file"):
        load_master_key(sealed, None)
    passphrase.write_bytes(b"pw2\n")
    with pytest.raises(KeyFileError, match="passphrase does not open"):
        load_master_key(sealed, passphrase)
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key")
    with pytest.raises(KeyFileError, match="base64"):
        load_master_key(garbage, None)
    with pytest.raises(KeyFileError, match="No such file"):
        load_master_key(tmp_path / "absent", None)


def test_an_empty_passphrase_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(KeyFileError, match="empty"):
        read_passphrase(empty)


def test_file_urls_name_their_store_and_manifest(tmp_path: Path) -> None:
    backup_id = str(uuid.uuid4())
    (tmp_path / "store" / "box" / backup_id).mkdir(parents=True)
    url = f"file://{tmp_path}/store/box/{backup_id}/manifest.json"
    store = open_store(url, None, depth=3)
    assert manifest_key(store, url) == (f"box/{backup_id}/manifest.json", backup_id)
    listing = open_store(f"file://{tmp_path}/store/box", None, depth=1)
    assert container_of(listing, f"file://{tmp_path}/store/box/") == "box"


@pytest.mark.parametrize(
    "url",
    [
        "file:///",
        "file://relative/x/y/manifest.json",
        "file:relative/x/y/manifest.json",
        "file:///nowhere-at-all/box/id/manifest.json",
    ],
)
def test_file_urls_without_a_store_are_refused(url: str) -> None:
    with pytest.raises(LocateError):
        open_store(url, None, depth=3)


def test_a_url_that_is_not_a_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "box" / "x").mkdir(parents=True)
    for url in (
        f"file://{tmp_path}/box/x/manifest.json",  # not a backup id
        f"file://{tmp_path}/box/{uuid.uuid4()}/chunk-00000000",
        f"file://{tmp_path}/box/../box/{uuid.uuid4()}/manifest.json",
    ):
        with pytest.raises(LocateError):
            manifest_key(open_store(url, None, depth=3), url)


def test_remote_urls_need_a_store_config(tmp_path: Path) -> None:
    with pytest.raises(LocateError, match="--store-config"):
        open_store("s3://bucket/id/manifest.json", None, depth=3)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[stores]]\nname = "a"\n[[stores]]\nname = "b"\n')
    with pytest.raises(LocateError, match="one \\[\\[stores\\]\\] entry"):
        open_store("s3://bucket/id/manifest.json", bad, depth=3)
    bad.write_text("not toml [")
    with pytest.raises(LocateError):
        open_store("s3://bucket/id/manifest.json", bad, depth=3)


def test_targets_must_be_new_or_empty(tmp_path: Path) -> None:
    assert sqlite_target(tmp_path / "new.db") == tmp_path / "new.db"
    assert sqlite_target(tmp_path) == tmp_path / "database.sqlite"
    (tmp_path / "file").write_text("x")
    with pytest.raises(TargetError):
        sqlite_target(tmp_path)  # no longer empty
    with pytest.raises(TargetError):
        sqlite_target(tmp_path / "file")
    with pytest.raises(TargetError):
        sqlite_target(tmp_path / "no-such-dir" / "x.db")
    directory_target(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    directory_target(tmp_path / "empty")
    for refused in (tmp_path, tmp_path / "file", tmp_path / "no-such-dir" / "data"):
        with pytest.raises(TargetError):
            directory_target(refused)
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    with pytest.raises(TargetError):
        directory_target(tmp_path / "link")


@pytest.mark.skipif(os.geteuid() != 0, reason="the place is checked when root restores")
def test_a_sticky_directory_may_be_above_a_target_but_not_its_parent(tmp_path: Path) -> None:
    """In a sticky directory others may still make names beside the target (a journal
    SQLite would roll into the restored file)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(TargetError, match="is not root's alone"):
        sqlite_target(shared / "x.db")
    with pytest.raises(TargetError, match="is not root's alone"):
        directory_target(shared / "data")
    (shared / "mine").mkdir(mode=0o700)
    assert sqlite_target(shared / "mine" / "x.db") == shared / "mine" / "x.db"
    directory_target(shared / "mine" / "data")
