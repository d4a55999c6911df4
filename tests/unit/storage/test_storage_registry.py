from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from strongroom.storage.base import StorageBackend
from strongroom.storage.config import (
    LocalStoreConfig,
    S3StoreConfig,
    StoreSettings,
    SwiftStoreConfig,
)
from strongroom.storage.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    StorageConfigError,
    UnknownStoreError,
)
from strongroom.storage.local import LocalBackend
from strongroom.storage.memory import MemoryBackend
from strongroom.storage.registry import StoreSet, build_backend, build_storage_registry
from strongroom.storage.s3 import S3Backend
from strongroom.storage.swift import SwiftBackend
from strongroom.storage.wrappers import RetryingBackend


def _swift_config(**overrides: object) -> SwiftStoreConfig:
    values: dict[str, object] = {
        "name": "swift",
        "auth_url": "http://127.0.0.1:1/auth/v1.0",
        "user": "test:tester",
        "key": "sup3rsecret",
    }
    values.update(overrides)
    return SwiftStoreConfig(**values)  # type: ignore[arg-type]


def test_registry_lists_every_config_type() -> None:
    assert set(build_storage_registry()) == {LocalStoreConfig, SwiftStoreConfig, S3StoreConfig}


def test_build_backend_wraps_in_retry(tmp_path: Path) -> None:
    local = build_backend(LocalStoreConfig(name="local", root=tmp_path))
    swift = build_backend(_swift_config())
    s3 = build_backend(S3StoreConfig(name="s3", endpoint_url="http://127.0.0.1:1"))
    for backend, inner_type in ((local, LocalBackend), (swift, SwiftBackend), (s3, S3Backend)):
        assert isinstance(backend, RetryingBackend)
        assert isinstance(backend.unwrap(), inner_type)
        backend.close()


def test_build_backend_refuses_unknown_config() -> None:
    with pytest.raises(StorageConfigError):
        build_backend(object())  # type: ignore[arg-type]


def test_secrets_are_not_in_repr() -> None:
    swift = _swift_config()
    keystone = _swift_config(
        auth_version="3",
        user=None,
        key=None,
        username="u",
        password="pw-secret-1",
        project_name="p",
    )
    app_cred = _swift_config(
        auth_version="3",
        user=None,
        key=None,
        application_credential_id="id1",
        application_credential_secret="ac-secret-2",
    )
    s3 = S3StoreConfig(name="s3", access_key="AKIAEXAMPLE", secret_key="s3-secret-3")
    text = " ".join(repr(c) for c in (swift, keystone, app_cred, s3))
    for secret in ("sup3rsecret", "pw-secret-1", "ac-secret-2", "s3-secret-3"):
        assert secret not in text
    assert "test:tester" in text and "AKIAEXAMPLE" in text


@pytest.mark.parametrize(
    "overrides",
    [
        {"key": None},
        {"auth_version": "2"},
        {"auth_url": "ftp://x"},
        {"auth_version": "3", "user": None, "key": None, "username": "u"},
        {"auth_version": "3", "application_credential_id": "only-the-id"},
        {"default_container": "../x"},
        {"timeout": 0},
        {"name": "bad name"},
    ],
)
def test_swift_config_validation(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _swift_config(**overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        {"access_key": "a"},
        {"endpoint_url": "localhost:9000"},
        {"addressing_style": "sideways"},
        {"checksum_mode": "always"},
        {"multipart_chunksize": 1024},
        {"multipart_threshold": 5 * 1024 * 1024, "multipart_chunksize": 6 * 1024 * 1024},
    ],
)
def test_s3_config_validation(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        S3StoreConfig(name="s3", **overrides)  # type: ignore[arg-type]


def test_local_config_root_is_made_absolute() -> None:
    assert LocalStoreConfig(name="local", root=Path("relative")).root == Path.cwd() / "relative"
    with pytest.raises(ValidationError, match="store name"):
        LocalStoreConfig(name="../x", root=Path("/r"))


def test_one_settings_entry_is_one_typed_store() -> None:
    adapter = TypeAdapter(StoreSettings)
    assert isinstance(adapter.validate_python({"name": "a"}), LocalStoreConfig)
    keystone = adapter.validate_python(
        {
            "name": "sw",
            "kind": "swift",
            "auth_url": "http://127.0.0.1:1/v3",
            "auth_version": "3",
            "user": "u",
            "key": "pw-secret-4",
            "project_name": "p",
        }
    )
    assert isinstance(keystone, SwiftStoreConfig)
    assert (keystone.username, keystone.password, keystone.user) == ("u", "pw-secret-4", None)
    assert "pw-secret-4" not in repr(keystone) and "pw-secret-4" not in str(keystone.model_dump())
    with pytest.raises(ValidationError, match="kind must be local, swift or s3"):
        adapter.validate_python({"name": "f", "kind": "ftp"})


def _store_set(tmp_path: Path) -> StoreSet:
    stores: dict[str, StorageBackend] = {
        "mem": MemoryBackend("mem"),
        "disk": LocalBackend(tmp_path / "disk"),
        "other-mem": MemoryBackend("other"),
    }
    return StoreSet(stores, default_name="disk")


def test_store_set_names_default_and_get(tmp_path: Path) -> None:
    stores = _store_set(tmp_path)
    assert stores.names() == ["mem", "disk", "other-mem"]
    assert stores.default_name == "disk"
    assert isinstance(stores.default, LocalBackend)
    assert stores.get("mem").url_for("c/x") == "memory://mem/c/x"
    with pytest.raises(UnknownStoreError, match="nope"):
        stores.get("nope")


def test_store_set_resolve_url_finds_the_store(tmp_path: Path) -> None:
    stores = _store_set(tmp_path)
    for name in stores.names():
        backend = stores.get(name)
        backend.put("c/b1/manifest.json", name.encode())
        url = backend.url_for("c/b1/manifest.json")
        found_name, found, key = stores.resolve_url(url)
        assert (found_name, key) == (name, "c/b1/manifest.json")
        assert found.get(key) == name.encode()


def test_store_set_resolve_url_refuses_unserved_urls(tmp_path: Path) -> None:
    stores = _store_set(tmp_path)
    with pytest.raises(ObjectNotFoundError, match="no configured store"):
        stores.resolve_url("s3://bucket/key")
    with pytest.raises(ObjectNotFoundError):
        stores.resolve_url("file:///elsewhere/c/x")
    with pytest.raises(ObjectNotFoundError) as caught:
        stores.resolve_url("https://user:hunter2@swift.example/v1/AUTH_x/c/o?sig=abc")
    assert "hunter2" not in str(caught.value) and "sig=abc" not in str(caught.value)


@pytest.mark.parametrize("url", ["", "not a url", "ftp://host/c/x", "javascript:alert(1)"])
def test_store_set_resolve_url_refuses_non_object_urls(tmp_path: Path, url: str) -> None:
    with pytest.raises(InvalidKeyError):
        _store_set(tmp_path).resolve_url(url)


def test_store_set_resolve_url_refuses_path_tricks(tmp_path: Path) -> None:
    stores = _store_set(tmp_path)
    root = (tmp_path / "disk").as_uri()
    with pytest.raises(InvalidKeyError):
        stores.resolve_url(f"{root}/c/../../etc/passwd")
    with pytest.raises(InvalidKeyError):
        stores.resolve_url(f"{root}/c/%2e%2e/%2e%2e/etc/passwd")
    with pytest.raises(InvalidKeyError):
        stores.resolve_url("memory://mem/c/%00")


def test_store_set_resolve_url_refuses_symlink_escape(tmp_path: Path) -> None:
    stores = _store_set(tmp_path)
    (tmp_path / "disk" / "c").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("x")
    (tmp_path / "disk" / "c" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(InvalidKeyError, match="symlink"):
        stores.resolve_url((tmp_path / "disk" / "c" / "link" / "secret").as_uri())


def test_store_set_requires_a_configured_default() -> None:
    with pytest.raises(StorageConfigError):
        StoreSet({"a": MemoryBackend()}, default_name="b")
    with pytest.raises(StorageConfigError):
        StoreSet({}, default_name="a")


def test_store_set_from_configs(tmp_path: Path) -> None:
    stores = StoreSet.from_configs(
        [LocalStoreConfig(name="one", root=tmp_path / "1"), _swift_config(name="two")]
    )
    assert stores.names() == ["one", "two"] and stores.default_name == "one"
    url = stores.default.url_for("c/x")
    assert stores.resolve_url(url)[::2] == ("one", "c/x")
    stores.close()
    with pytest.raises(StorageConfigError, match="twice"):
        same = LocalStoreConfig(name="one", root=tmp_path)
        StoreSet.from_configs([same, same])
