"""One construction path for stores: config → backend, and the set of named stores.

The mapping from config type to backend is written out in :func:`build_storage_registry`;
nothing registers itself on import. Backend modules are imported when first built, so a
deployment without S3 never imports boto3.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from strongroom.storage.base import StorageBackend
from strongroom.storage.config import (
    LocalStoreConfig,
    S3StoreConfig,
    StoreConfig,
    SwiftStoreConfig,
)
from strongroom.storage.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    StorageConfigError,
    StorageError,
    UnknownStoreError,
)
from strongroom.storage.keys import container_rule
from strongroom.storage.wrappers import RetryingBackend

log = logging.getLogger(__name__)

BackendFactory = Callable[[Any], StorageBackend]

KNOWN_URL_SCHEMES = ("file", "http", "https", "s3", "memory")


def _build_local(config: LocalStoreConfig) -> StorageBackend:
    from strongroom.storage.local import LocalBackend

    if config.root is None:
        raise StorageConfigError(f"local store {config.name!r} has no root directory")
    return LocalBackend(config.root)


def _build_swift(config: SwiftStoreConfig) -> StorageBackend:
    from strongroom.storage.swift import SwiftBackend

    return SwiftBackend(config)


def _build_s3(config: S3StoreConfig) -> StorageBackend:
    from strongroom.storage.s3 import S3Backend

    return S3Backend(config)


def build_storage_registry() -> dict[type, BackendFactory]:
    """Config type → factory of the unwrapped backend, listed by hand."""
    return {
        LocalStoreConfig: _build_local,
        SwiftStoreConfig: _build_swift,
        S3StoreConfig: _build_s3,
    }


def build_backend(
    config: StoreConfig,
    *,
    retry_attempts: int = 5,
    sleep: Callable[[float], None] = time.sleep,
) -> StorageBackend:
    """The backend for ``config``, wrapped in a :class:`RetryingBackend`."""
    factory = build_storage_registry().get(type(config))
    if factory is None:
        raise StorageConfigError(f"no storage backend for {type(config).__name__}")
    return RetryingBackend(factory(config), attempts=retry_attempts, sleep=sleep)


def _shown_url(url: str) -> str:
    """``url`` without credentials, query or fragment, for messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "(unparseable URL)"
    shown = f"{parts.scheme}://{host}{parts.path}" if parts.scheme else parts.path
    return shown[:300]


def store_kind(config: StoreConfig) -> str:
    return config.kind


class StoreSet:
    """Named stores with a default one. Owns the backends: :meth:`close` closes them all.

    ``kinds`` (store name → ``local``/``swift``/``s3``) picks each store's container naming
    rule; a store not named there follows the general key rule."""

    def __init__(
        self,
        stores: Mapping[str, StorageBackend],
        default_name: str,
        kinds: Mapping[str, str] | None = None,
    ) -> None:
        if not stores:
            raise StorageConfigError("at least one store must be configured")
        if default_name not in stores:
            raise StorageConfigError(f"default store {default_name!r} is not configured")
        self._stores = dict(stores)
        self._default_name = default_name
        self.kinds = dict(kinds or {})

    @classmethod
    def from_configs(
        cls,
        configs: Iterable[StoreConfig],
        default_name: str | None = None,
        *,
        retry_attempts: int = 5,
    ) -> StoreSet:
        """Build every store; the default is ``default_name`` or else the first one."""
        stores: dict[str, StorageBackend] = {}
        kinds: dict[str, str] = {}
        try:
            for config in configs:
                if config.name in stores:
                    raise StorageConfigError(f"store {config.name!r} is configured twice")
                stores[config.name] = build_backend(config, retry_attempts=retry_attempts)
                kinds[config.name] = store_kind(config)
            if not stores:
                raise StorageConfigError("at least one store must be configured")
            return cls(stores, default_name or next(iter(stores)), kinds)
        except BaseException:
            for backend in stores.values():
                backend.close()
            raise

    @property
    def default_name(self) -> str:
        return self._default_name

    @property
    def default(self) -> StorageBackend:
        return self._stores[self._default_name]

    def names(self) -> list[str]:
        """Store names, in configuration order."""
        return list(self._stores)

    def get(self, name: str) -> StorageBackend:
        try:
            return self._stores[name]
        except KeyError:
            raise UnknownStoreError(f"no store named {name!r}") from None

    def kind(self, name: str) -> str:
        """``local``, ``swift`` or ``s3``."""
        self.get(name)
        return self.kinds.get(name, "local")

    def check_container(self, name: str, container: str) -> str:
        """Return ``container`` if a new container of that name can be made on store
        ``name`` (its kind's naming rule), else raise :class:`InvalidKeyError`."""
        return container_rule(self.kind(name))(container)

    def resolve_url(self, url: str) -> tuple[str, StorageBackend, str]:
        """``(store name, backend, key)`` for an object URL, asking the default store first.

        Raises :class:`InvalidKeyError` for something that is not an object URL (or names an
        invalid key), :class:`ObjectNotFoundError` when no configured store serves it.
        """
        if not isinstance(url, str) or not url:
            raise InvalidKeyError("object URL is empty")
        try:
            scheme = urlsplit(url).scheme
        except ValueError as exc:
            raise InvalidKeyError("object URL cannot be parsed") from exc
        if scheme not in KNOWN_URL_SCHEMES:
            raise InvalidKeyError(
                f"{_shown_url(url)!r} is not an object URL "
                f"(expected one of: {', '.join(s + '://' for s in KNOWN_URL_SCHEMES)})"
            )
        order = [self._default_name, *(n for n in self._stores if n != self._default_name)]
        for name in order:
            backend = self._stores[name]
            key = backend.key_for_url(url)
            if key is not None:
                return name, backend, key
        raise ObjectNotFoundError(
            f"no configured store ({', '.join(order)}) serves {_shown_url(url)!r}"
        )

    def close(self) -> None:
        """Close every store; a failure is logged and the others are still closed."""
        for name, backend in self._stores.items():
            try:
                backend.close()
            except StorageError:
                log.exception("closing store %s failed", name)
