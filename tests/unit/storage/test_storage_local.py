from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.storage.errors import InvalidKeyError, StorageError
from strongroom.storage.local import TEMP_PREFIX, LocalBackend


def test_local_layout_and_url(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("c/a/b.json", b"{}")
    assert (tmp_path / "c" / "a" / "b.json").read_bytes() == b"{}"
    assert backend.url_for("c/a/b.json") == f"file://{tmp_path}/c/a/b.json"
    assert backend.url_for("c/a b%") == f"file://{tmp_path}/c/a%20b%25"


def test_local_list_hides_temporary_files(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("c/a/x", b"1")
    (tmp_path / "c" / "a" / f"{TEMP_PREFIX}abc").write_bytes(b"partial")
    assert backend.list("c") == ["c/a/x"]
    with pytest.raises(InvalidKeyError):
        backend.put(f"c/a/{TEMP_PREFIX}abc", b"x")


def test_local_put_leaves_no_temporary_files(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    for n in range(3):
        backend.put("c/a/x", b"v%d" % n)
    assert sorted(p.name for p in (tmp_path / "c" / "a").iterdir()) == ["x"]


def test_local_delete_removes_empty_parents_up_to_the_container(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("c/a/b/c/x", b"1")
    backend.put("c/a/y", b"2")
    backend.delete("c/a/b/c/x")
    assert not (tmp_path / "c" / "a" / "b").exists()
    assert (tmp_path / "c" / "a" / "y").exists()
    backend.delete("c/a/y")
    assert (tmp_path / "c").is_dir() and not (tmp_path / "c" / "a").exists()


def test_local_object_and_directory_of_same_name_conflict(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("c/a", b"1")
    with pytest.raises(StorageError) as caught:
        backend.put("c/a/b", b"2")
    assert str(tmp_path) not in str(caught.value)


def test_local_key_for_url_accepts_localhost_and_refuses_others(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    assert backend.key_for_url(f"file://localhost{tmp_path}/c/x") == "c/x"
    assert backend.key_for_url(f"file://otherhost{tmp_path}/c/x") is None
    assert backend.key_for_url(f"file://{tmp_path}-sibling/c/x") is None
    with pytest.raises(InvalidKeyError):
        backend.key_for_url(f"file://{tmp_path}/c/x?y")


def test_local_check_creates_root(tmp_path: Path) -> None:
    LocalBackend(tmp_path / "new" / "root").check()
    assert (tmp_path / "new" / "root").is_dir()
