"""Typed store configurations. Parsed at the edge, handed to :func:`registry.build_backend`.

Secrets (keys, passwords, application credential secrets) are excluded from ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from strongroom.storage.errors import InvalidKeyError, StorageConfigError
from strongroom.storage.keys import validate_container

SwiftAuthVersion = Literal["1", "3"]
AddressingStyle = Literal["path", "virtual", "auto"]
ChecksumMode = Literal["when_required", "when_supported"]

DEFAULT_CONTAINER = "database-backups"  # valid on every store kind, S3 included


def _check_name(name: str) -> None:
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise StorageConfigError(
            f"store name {name!r} must be non-empty letters, digits, '-' or '_'"
        )


def _check_container(what: str, container: str) -> None:
    try:
        validate_container(container)
    except InvalidKeyError as exc:
        raise StorageConfigError(f"{what}: {exc}") from exc


def _check_timeout(timeout: float) -> None:
    if timeout <= 0:
        raise StorageConfigError(f"timeout must be positive, not {timeout}")


@dataclass(frozen=True)
class LocalStoreConfig:
    """A directory on a local (or mounted) filesystem."""

    name: str
    root: Path

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not Path(self.root).is_absolute():
            raise StorageConfigError(f"local store {self.name!r}: root must be an absolute path")


@dataclass(frozen=True)
class SwiftStoreConfig:
    """OpenStack Swift, through tempauth/v1 or Keystone v3.

    * ``auth_version="1"``: ``user`` (``account:user``) and ``key``.
    * ``auth_version="3"``: ``username``, ``password``, ``project_name``, and the user and
      project domains; or ``application_credential_id`` and ``application_credential_secret``.

    ``storage_url`` overrides the storage URL the auth service hands out (for example an
    internal endpoint); ``region_name`` and ``interface`` pick the catalog endpoint in v3.
    """

    name: str
    auth_url: str
    auth_version: SwiftAuthVersion = "1"
    user: str | None = None
    key: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    project_name: str | None = None
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    application_credential_id: str | None = None
    application_credential_secret: str | None = field(default=None, repr=False)
    region_name: str | None = None
    interface: str = "public"
    storage_url: str | None = None
    default_container: str = DEFAULT_CONTAINER
    insecure: bool = False
    cacert: str | None = None
    timeout: float = 30.0

    def __post_init__(self) -> None:
        _check_name(self.name)
        where = f"swift store {self.name!r}"
        if not self.auth_url.startswith(("http://", "https://")):
            raise StorageConfigError(f"{where}: auth_url must be an http(s) URL")
        if self.auth_version == "1":
            if not (self.user and self.key):
                raise StorageConfigError(f"{where}: auth version 1 needs user and key")
        elif self.auth_version == "3":
            app_cred = self.application_credential_id or self.application_credential_secret
            if app_cred:
                if not (self.application_credential_id and self.application_credential_secret):
                    raise StorageConfigError(
                        f"{where}: an application credential needs both its id and its secret"
                    )
            elif not (self.username and self.password and self.project_name):
                raise StorageConfigError(
                    f"{where}: Keystone v3 needs username, password and project_name, "
                    "or an application credential"
                )
        else:
            raise StorageConfigError(f"{where}: auth_version must be '1' or '3'")
        _check_container(where, self.default_container)
        _check_timeout(self.timeout)


@dataclass(frozen=True)
class S3StoreConfig:
    """An S3 or S3-compatible store (AWS, Ceph RGW, MinIO, Swift s3api...).

    ``checksum_mode`` sets botocore's ``request_checksum_calculation`` and
    ``response_checksum_validation``. The default, ``"when_required"``, avoids the newest SDK
    defaults (CRC checksums on every request) that many S3-compatible stores reject;
    integrity is still checked with Content-MD5 on upload.
    """

    name: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    addressing_style: AddressingStyle = "path"
    checksum_mode: ChecksumMode = "when_required"
    default_bucket: str = DEFAULT_CONTAINER
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    multipart_threshold: int = 64 * 1024 * 1024
    multipart_chunksize: int = 8 * 1024 * 1024
    verify_tls: bool = True

    def __post_init__(self) -> None:
        _check_name(self.name)
        where = f"s3 store {self.name!r}"
        if self.endpoint_url is not None and not self.endpoint_url.startswith(
            ("http://", "https://")
        ):
            raise StorageConfigError(f"{where}: endpoint_url must be an http(s) URL")
        if bool(self.access_key) != bool(self.secret_key):
            raise StorageConfigError(f"{where}: give both access_key and secret_key, or neither")
        if self.addressing_style not in ("path", "virtual", "auto"):
            raise StorageConfigError(f"{where}: addressing_style must be path, virtual or auto")
        if self.checksum_mode not in ("when_required", "when_supported"):
            raise StorageConfigError(
                f"{where}: checksum_mode must be when_required or when_supported"
            )
        _check_container(where, self.default_bucket)
        _check_timeout(self.connect_timeout)
        _check_timeout(self.read_timeout)
        if self.multipart_chunksize < 5 * 1024 * 1024:
            raise StorageConfigError(f"{where}: multipart_chunksize must be at least 5 MiB")
        if self.multipart_threshold < self.multipart_chunksize:
            raise StorageConfigError(
                f"{where}: multipart_threshold must be at least multipart_chunksize"
            )


StoreConfig = LocalStoreConfig | SwiftStoreConfig | S3StoreConfig
