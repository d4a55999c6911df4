"""Store settings: one typed model per kind of store, read from the ``[[stores]]`` entries
of the settings file (``config.Settings.stores``) and handed as they are to
:func:`registry.build_backend`. ``kind`` picks the model (``local`` when absent).

Secrets (keys, passwords, application credential secrets) are left out of ``repr`` and of
dumps. A Keystone v3 Swift store may give its user name and password as ``user`` and
``key``, the names version 1 uses, as the settings file always has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from strongroom.storage.errors import InvalidKeyError, StorageConfigError
from strongroom.storage.keys import validate_container

SwiftAuthVersion = Literal["1", "3"]
AddressingStyle = Literal["path", "virtual", "auto"]
ChecksumMode = Literal["when_required", "when_supported"]

DEFAULT_CONTAINER = "database-backups"  # valid on every store kind, S3 included


def _secret() -> Any:
    return Field(default=None, repr=False, exclude=True)


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


class _Store(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str

    @model_validator(mode="after")
    def _checked(self) -> _Store:
        _check_name(self.name)
        self._check()
        return self

    def _check(self) -> None:
        """The kind's own rules; raises ``StorageConfigError``."""


class LocalStoreConfig(_Store):
    """A directory on a local (or mounted) filesystem. Without ``root`` the settings put
    it under the data directory; a relative one is taken from the working directory."""

    kind: Literal["local"] = "local"
    root: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _absolute(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("root") is not None:
            values = {**values, "root": Path(values["root"]).absolute()}
        return values


class SwiftStoreConfig(_Store):
    """OpenStack Swift, through tempauth/v1 or Keystone v3.

    * ``auth_version="1"``: ``user`` (``account:user``) and ``key``.
    * ``auth_version="3"``: ``username``, ``password``, ``project_name``, and the user and
      project domains; or ``application_credential_id`` and ``application_credential_secret``.

    ``storage_url`` overrides the storage URL the auth service hands out (for example an
    internal endpoint); ``region_name`` and ``interface`` pick the catalog endpoint in v3.
    """

    kind: Literal["swift"] = "swift"
    auth_url: str
    auth_version: SwiftAuthVersion = "1"
    user: str | None = None
    key: str | None = _secret()
    username: str | None = None
    password: str | None = _secret()
    project_name: str | None = None
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    application_credential_id: str | None = None
    application_credential_secret: str | None = _secret()
    region_name: str | None = None
    interface: Literal["public", "internal", "admin"] = "public"
    storage_url: str | None = None
    default_container: str = DEFAULT_CONTAINER
    insecure: bool = False
    cacert: str | None = None
    timeout: float = 30.0

    @model_validator(mode="before")
    @classmethod
    def _v3_names(cls, values: Any) -> Any:
        """Version 3 user and password given as ``user`` and ``key``."""
        if (
            isinstance(values, dict)
            and str(values.get("auth_version")) == "3"
            and values.get("user") is not None
            and values.get("username") is None
        ):
            values = {**values, "username": values["user"], "password": values.get("key")}
            values.update(user=None, key=None)
        return values

    def _check(self) -> None:
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


class S3StoreConfig(_Store):
    """An S3 or S3-compatible store (AWS, Ceph RGW, MinIO, Swift s3api...).

    ``checksum_mode`` sets botocore's ``request_checksum_calculation`` and
    ``response_checksum_validation``. The default, ``"when_required"``, avoids the newest SDK
    defaults (CRC checksums on every request) that many S3-compatible stores reject;
    integrity is still checked with Content-MD5 on upload.
    """

    kind: Literal["s3"] = "s3"
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = _secret()
    addressing_style: AddressingStyle = "path"
    checksum_mode: ChecksumMode = "when_required"
    default_bucket: str = DEFAULT_CONTAINER
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    multipart_threshold: int = 64 * 1024 * 1024
    multipart_chunksize: int = 8 * 1024 * 1024
    verify_tls: bool = True

    def _check(self) -> None:
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


def _kind(value: Any) -> Any:
    return value.get("kind", "local") if isinstance(value, dict) else value.kind


StoreSettings = Annotated[
    Annotated[LocalStoreConfig, Tag("local")]
    | Annotated[SwiftStoreConfig, Tag("swift")]
    | Annotated[S3StoreConfig, Tag("s3")],
    Discriminator(
        _kind,
        custom_error_type="store_kind",
        custom_error_message="kind must be local, swift or s3",
        custom_error_context={"discriminator": "kind"},
    ),
]
"""One ``[[stores]]`` entry of the settings, typed by its ``kind``."""
