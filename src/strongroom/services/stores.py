"""The configured object stores, seen from the use cases: pick one, find a manifest."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Protocol

from strongroom.domain.errors import (
    BadRequestError,
    StorageAccessDeniedError,
    StorageUnavailableError,
)
from strongroom.domain.model import SERVICE_PROJECT
from strongroom.pipeline.checksum import sha256_hex
from strongroom.pipeline.errors import FormatError
from strongroom.pipeline.keys import MasterKey
from strongroom.pipeline.reader import open_manifest
from strongroom.services import object_layout
from strongroom.storage.base import StorageBackend
from strongroom.storage.config import DEFAULT_CONTAINER
from strongroom.storage.errors import StorageAuthError, StorageError

log = logging.getLogger(__name__)


class StoreDirectory(Protocol):
    """The named stores (``strongroom.storage.registry.StoreSet``)."""

    @property
    def default_name(self) -> str: ...
    def names(self) -> Iterable[str]: ...
    def get(self, name: str) -> StorageBackend: ...
    def resolve_url(self, url: str) -> tuple[str, StorageBackend, str]: ...
    def check_container(self, name: str, container: str) -> str: ...
    def kind(self, name: str) -> str: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class RegisteredManifest:
    store_name: str
    container: str
    sha256: str  # of the manifest's bytes: a restore refuses any other manifest there


@dataclass(frozen=True)
class AllowedContainers:
    """The containers a request may name (setting ``allowed_containers``): the configured
    default ones, and any name a pattern matches. A store creates a container on its first
    write, in the service's own account: without this a project could make containers
    without end, or write into any container the service's credentials reach."""

    defaults: frozenset[str] = frozenset({DEFAULT_CONTAINER})
    patterns: tuple[str, ...] = ()

    def admits(self, container: str) -> bool:
        # Case-sensitive on every platform: "Backups" is another container than "backups".
        return container in self.defaults or any(fnmatchcase(container, p) for p in self.patterns)


class StoreCatalog:
    def __init__(
        self,
        stores: StoreDirectory,
        master_key: MasterKey,
        allowed: AllowedContainers | None = None,
    ) -> None:
        self._stores = stores
        self.master_key = master_key
        self._allowed = allowed or AllowedContainers()

    @property
    def default_name(self) -> str:
        return self._stores.default_name

    def resolve_name(self, driver: object) -> str:
        """``storage_driver`` picks a store by name; absent means the default."""
        if driver is None:
            return self._stores.default_name
        if not isinstance(driver, str) or driver not in self._stores.names():
            known = ", ".join(sorted(self._stores.names()))
            raise BadRequestError(f"Unknown storage_driver {driver!r}; configured stores: {known}.")
        return driver

    def check_allowed(self, container: str) -> None:
        """A container a request names must be one the operator allows."""
        if not self._allowed.admits(container):
            raise BadRequestError(
                f"Container {container!r} is not allowed on this service (setting "
                "allowed_containers): leave swift_container out to use the default container."
            )

    def check_container(self, name: str, container: str) -> None:
        """A container a request names must be allowed, and follow the naming rule of the
        store it goes to (S3: bucket names)."""
        self.check_allowed(container)
        try:
            self._stores.check_container(name, container)
        except StorageError as exc:
            raise BadRequestError(
                f"Container {container!r} cannot be used on store {name!r}: {exc}."
            ) from exc

    def is_local(self, name: str) -> bool:
        """A store on this host's file system: reading from it is a disk read, not a
        download."""
        return self._stores.kind(name) == "local"

    def container_allowed(self, name: str, container: str) -> bool:
        try:
            self._stores.check_container(name, container)
        except StorageError:
            return False
        return True

    def check(self, name: str, *, project_id: str) -> None:
        """As Trove does: the store must be reachable before a job is queued."""
        try:
            self._stores.get(name).check()
        except StorageAuthError as exc:
            log.warning("store %s refused the service's credentials: %s", name, exc)
            raise StorageAccessDeniedError(
                f"Swift account not accessible for tenant {project_id}."
            ) from exc
        except StorageError as exc:
            log.warning("store %s is unreachable: %s", name, exc)
            raise StorageUnavailableError("Cannot connect to Swift.") from exc

    def check_all(self) -> dict[str, StorageError]:
        """Each store's problem, if any, by name (for start-up)."""
        problems: dict[str, StorageError] = {}
        for name in self._stores.names():
            try:
                self._stores.get(name).check()
            except StorageError as exc:
                problems[name] = exc
        return problems

    def names(self) -> list[str]:
        return list(self._stores.names())

    def backend(self, name: str) -> StorageBackend:
        return self._stores.get(name)

    def locate(self, url: str) -> tuple[str, StorageBackend, str]:
        return self._stores.resolve_url(url)

    def read_manifest_at(
        self, url: str, *, project_id: str | None = None
    ) -> RegisteredManifest | None:
        """Where the manifest at ``url`` is, and its SHA-256, when this service can read
        and verify it with its master key and (given ``project_id``) that project wrote
        it; ``None`` otherwise (the reason is logged)."""
        try:
            name, backend, key = self._stores.resolve_url(url)
            raw = backend.get(key)
            opened = open_manifest(raw, self.master_key)
        except (StorageError, FormatError, ValueError) as exc:
            log.info("restore_from location refused: %s", exc)
            return None
        if opened.manifest.project_id == SERVICE_PROJECT:
            log.info("restore_from location refused: the service's own metadata backup")
            return None
        if project_id is not None and opened.manifest.project_id != project_id:
            log.info("restore_from location refused: another project's backup")
            return None
        return RegisteredManifest(name, object_layout.container_of(key), sha256_hex(raw))

    def close(self) -> None:
        self._stores.close()
