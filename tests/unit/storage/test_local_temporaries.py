"""The local store lists the temporary files a killed writer leaves, and removes only
those."""

import os

import pytest

from strongroom.storage.base import TEMP_PREFIX, TemporaryObjects
from strongroom.storage.errors import InvalidKeyError
from strongroom.storage.local import LocalBackend


def test_temporary_files_are_listed_apart_and_removed_one_by_one(tmp_path):
    backend = LocalBackend(tmp_path)
    assert isinstance(backend, TemporaryObjects)
    backend.put("c/a/obj", b"data")
    partial = tmp_path / "c" / "a" / f"{TEMP_PREFIX}abc"
    partial.write_bytes(b"partial")
    os.utime(partial, (1_000_000, 1_000_000))
    assert backend.list("c/") == ["c/a/obj"]
    (found,) = backend.list_temporary("c/")
    assert (found.key, found.modified) == (f"c/a/{TEMP_PREFIX}abc", 1_000_000)
    backend.delete_temporary(found.key)
    assert not partial.exists()
    backend.delete_temporary(found.key)  # already gone: fine
    assert backend.list("c/") == ["c/a/obj"]


@pytest.mark.parametrize("key", ["c/a/obj", f"c/{TEMP_PREFIX}d/x", "c/a/../obj", "c/a/"])
def test_only_a_temporary_files_key_can_be_removed_that_way(tmp_path, key):
    backend = LocalBackend(tmp_path)
    backend.put("c/a/obj", b"data")
    with pytest.raises(InvalidKeyError):
        backend.delete_temporary(key)
    assert backend.get("c/a/obj") == b"data"


def test_a_symlink_named_like_a_temporary_file_is_not_followed(tmp_path):
    backend = LocalBackend(tmp_path / "store")
    backend.put("c/a/obj", b"data")
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (tmp_path / "store" / "c" / "a" / f"{TEMP_PREFIX}link").symlink_to(victim)
    assert backend.list_temporary("c/") == []
    backend.delete_temporary(f"c/a/{TEMP_PREFIX}link")
    assert victim.read_bytes() == b"keep me"
