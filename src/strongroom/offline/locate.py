"""The store an offline command reads: a ``file://`` URL names its own local store; a
Swift or S3 URL needs the store's settings (one ``[[stores]]`` entry in a TOML file, as in
the service's configuration)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import TypeAdapter, ValidationError

from strongroom.services import object_layout
from strongroom.storage.base import StorageBackend
from strongroom.storage.config import LocalStoreConfig, StoreSettings
from strongroom.storage.errors import StorageError
from strongroom.storage.registry import build_backend


class LocateError(Exception):
    """A URL or store configuration that names no readable store; the message says why."""


def open_store(url: str, store_config_file: Path | None, *, depth: int) -> StorageBackend:
    """The store holding ``url``; ``depth`` is how many path segments of a ``file://``
    URL are the key (3 for a manifest, 1 for a container)."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme == "file":
        path = Path(unquote(parts.path))
        if (
            parts.netloc not in ("", "localhost")
            or not path.is_absolute()
            or len(path.parts) <= depth
        ):
            raise LocateError(f"{url!r} is not a file:// URL of a store's object")
        root = path.parents[depth - 1]
        if not root.is_dir():
            raise LocateError(f"no store directory at {root}")
        return build_backend(LocalStoreConfig(name="offline", root=root), retry_attempts=1)
    if store_config_file is None:
        raise LocateError(f"a {scheme}:// URL needs --store-config FILE (the store's settings)")
    try:
        document = tomllib.loads(store_config_file.read_text())
        (entry,) = document["stores"]
        return build_backend(TypeAdapter(StoreSettings).validate_python(entry))
    except OSError as exc:
        raise LocateError(f"store config {store_config_file}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        problem = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else exc
        raise LocateError(
            f"store config {store_config_file}: expected one [[stores]] entry: {problem}"
        ) from None
    except StorageError as exc:
        raise LocateError(f"store config {store_config_file}: {exc}") from None


def manifest_key(store: StorageBackend, url: str) -> tuple[str, str]:
    """``(key, backup id)`` of the manifest ``url`` names in ``store``."""
    key = _key(store, url)
    found = object_layout.parse(key)
    if found is None or found.kind != object_layout.ObjectKind.MANIFEST:
        raise LocateError(f"{url!r} is not a backup manifest (…/<container>/<id>/manifest.json)")
    return key, found.backup_id


def container_of(store: StorageBackend, url: str) -> str:
    """The container a store URL (``…/<container>``) names."""
    return object_layout.container_of(_key(store, url.rstrip("/") + "/x"))


def _key(store: StorageBackend, url: str) -> str:
    try:
        key = store.key_for_url(url)
    except StorageError as exc:
        raise LocateError(str(exc)) from None
    if key is None:
        raise LocateError(f"{url!r} does not belong to the configured store")
    return key
