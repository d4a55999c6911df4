"""OpenStack Swift backend (python-swiftclient).

Keys map to ``<container>/<object>``; containers are created on first put (one ``PUT`` per
container per backend instance while it is among the last few hundred used; the service
lets a request name only the containers of its ``allowed_containers`` setting). Object
URLs are ``<storage_url>/<container>/<object>``, the storage URL being the one the auth
service returns (or ``storage_url`` from the config).

``key_for_url`` accepts an ``http(s)`` URL whose path lies under this store's account path
(``/v1/AUTH_<account>``) and ignores scheme, host and port: the same account is reached
through public, internal and admin endpoints, and a ``locationRef`` recorded through one of
them must still resolve when the service uses another.

swiftclient's own retries are off (``retries=0``); :class:`~strongroom.storage.wrappers.
RetryingBackend` retries. A token that Swift refuses (expired, revoked) is replaced once: by
swiftclient, and for uploads (which swiftclient will not resend from memory) by this backend.

With Keystone (``auth_version="3"``) each connection authenticates through a keystoneauth1
session (password or application credential), which applies ``cacert``/``insecure`` and the
timeout to Keystone too, and lets a refused token be renewed whatever the credential type.
``swiftclient.Connection`` is not thread-safe, so each thread gets its own connection; they
share the most recent token, so only the first request (or an expired token) authenticates.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

import requests
import swiftclient  # type: ignore[import-untyped]
from swiftclient.exceptions import ClientException  # type: ignore[import-untyped]

from strongroom.storage.base import ObjectInfo
from strongroom.storage.config import SwiftStoreConfig
from strongroom.storage.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    StorageAuthError,
    StorageConfigError,
    StorageError,
    TransientStorageError,
)
from strongroom.storage.keys import split_key, split_prefix, validate_key
from strongroom.storage.recent import RecentNames

T = TypeVar("T")

_TRANSIENT_STATUSES = frozenset({408, 409, 429, 498, 499})

try:  # keystoneauth1 is only needed (and only raises) with Keystone auth.
    from keystoneauth1 import exceptions as _ks_exceptions
    from keystoneauth1 import session as _ks_session
    from keystoneauth1.identity import v3 as _ks_v3

    _KS_TRANSIENT: tuple[type[BaseException], ...] = (
        _ks_exceptions.ConnectionError,
        _ks_exceptions.RetriableConnectionFailure,
        _ks_exceptions.ServiceUnavailable,
        _ks_exceptions.GatewayTimeout,
        _ks_exceptions.BadGateway,
        _ks_exceptions.InternalServerError,
    )
    _KS_AUTH: tuple[type[BaseException], ...] = (
        _ks_exceptions.Unauthorized,
        _ks_exceptions.Forbidden,
        _ks_exceptions.AuthorizationFailure,
    )
    _KS_CATALOG: tuple[type[BaseException], ...] = (_ks_exceptions.EndpointNotFound,)
    _KS_ANY: tuple[type[BaseException], ...] = (_ks_exceptions.ClientException,)

    class _CatalogSession(_ks_session.Session):
        """A session whose catalog look-up fails loudly: keystoneauth answers ``None`` for
        a missing endpoint, which swiftclient would take for a storage URL."""

        def __init__(self, *, missing: str | None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._missing = missing

        def get_endpoint(self, auth: Any = None, **kwargs: Any) -> str | None:
            url = super().get_endpoint(auth, **kwargs)
            if not url and self._missing:
                raise _ks_exceptions.EndpointNotFound(self._missing)
            return url

except ImportError:  # pragma: no cover - keystoneauth1 is a dependency of the test extras
    _ks_session = None  # type: ignore[assignment]
    _KS_TRANSIENT = _KS_AUTH = _KS_CATALOG = _KS_ANY = ()

_VERSIONED_AUTH_PATH = re.compile(r"v3(?:\.0)?$")


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=host).geturl()


class _SwiftErrors:
    """Maps swiftclient, requests and keystoneauth errors to storage errors (the edge)."""

    def __init__(self, who: str, auth_url: str, hint: str = "") -> None:
        self._who = who
        self._auth_url = _strip_userinfo(auth_url)
        self._hint = hint

    @contextmanager
    def mapped(self, op: str, key: str) -> Iterator[None]:
        what = f"swift {op} {key!r}" if key else f"swift {op}"
        try:
            yield
        except ClientException as exc:
            raise self._from_client_exception(exc, what) from exc
        except (TimeoutError, requests.exceptions.RequestException, ConnectionError) as exc:
            raise TransientStorageError(
                f"{what}: connection failed ({type(exc).__name__})"
            ) from exc
        except _KS_TRANSIENT as exc:
            raise TransientStorageError(
                f"{what}: identity service unavailable ({type(exc).__name__})"
            ) from exc
        except _KS_AUTH as exc:
            raise StorageAuthError(self._auth_message(None)) from exc
        except _KS_CATALOG as exc:
            raise StorageError(f"{what}: {exc}") from exc
        except _KS_ANY as exc:
            raise StorageError(f"{what}: identity service error ({type(exc).__name__})") from exc

    def _auth_message(self, status: int | None) -> str:
        code = f" (HTTP {status})" if status else ""
        return f"swift: {self._auth_url} refused the credentials of {self._who}{code}{self._hint}"

    def _from_client_exception(self, exc: ClientException, what: str) -> StorageError:
        status = exc.http_status
        text = str(exc.msg or "")
        is_auth = text.startswith(("Auth GET failed", "Unauthorized", "Authorization Failure"))
        reason = f"HTTP {status} {exc.http_reason or ''}".strip() if status else text[:200]
        if is_auth and status not in (None, 401, 403) and (status >= 500 or status == 429):
            return TransientStorageError(f"swift auth at {self._auth_url}: {reason}")
        if is_auth or status in (401, 403):
            if is_auth or status == 401:
                return StorageAuthError(self._auth_message(status))
            return StorageAuthError(f"{what}: access denied ({reason})")
        if status == 404:
            return ObjectNotFoundError(f"{what}: not found")
        if status is not None and (status >= 500 or status in _TRANSIENT_STATUSES):
            return TransientStorageError(f"{what}: {reason}")
        return StorageError(f"{what}: {reason}")


class SwiftBackend:
    """One Swift account. See the module docstring."""

    def __init__(self, config: SwiftStoreConfig) -> None:
        self._config = config
        self._local = threading.local()
        self._lock = threading.Lock()
        self._shared_url: str | None = None
        self._shared_token: str | None = None
        self._connections: list[swiftclient.Connection] = []
        self._containers = RecentNames()  # bounded: requests name containers
        if config.auth_version == "1":
            self._errors = _SwiftErrors(repr(config.user), config.auth_url)
        else:
            if config.application_credential_id:
                who = f"application credential {config.application_credential_id!r}"
            else:
                who = f"{config.username!r} for project {config.project_name!r}"
            self._errors = _SwiftErrors(
                who,
                config.auth_url,
                ": wrong or expired secret, or no role on the project",
            )

    @property
    def config(self) -> SwiftStoreConfig:
        return self._config

    # --- connections ---------------------------------------------------------------------

    def _connection_kwargs(self) -> dict[str, Any]:
        c = self._config
        os_options: dict[str, Any] = {}
        kwargs: dict[str, Any] = {
            "authurl": c.auth_url,
            "auth_version": c.auth_version,
            "retries": 0,
            "retry_on_ratelimit": False,
            "timeout": c.timeout,
            "insecure": c.insecure,
            "cacert": c.cacert,
        }
        if c.auth_version == "1":
            kwargs.update(user=c.user, key=c.key)
        else:
            os_options.update(
                user_domain_name=c.user_domain_name,
                project_domain_name=c.project_domain_name,
                endpoint_type=c.interface,
            )
            if c.region_name:
                os_options["region_name"] = c.region_name
            if c.application_credential_id:
                os_options.update(
                    auth_type="v3applicationcredential",
                    application_credential_id=c.application_credential_id,
                    application_credential_secret=c.application_credential_secret,
                )
            else:
                kwargs.update(user=c.username, key=c.password)
                os_options["project_name"] = c.project_name
        if c.storage_url:
            os_options["object_storage_url"] = c.storage_url.rstrip("/")
        kwargs["os_options"] = os_options
        if c.auth_version == "3":
            kwargs["session"] = self._keystone_session()
        return kwargs

    def _keystone_session(self) -> Any:
        """A keystoneauth1 session for this store's v3 credentials (one per connection).

        swiftclient takes the storage URL from its catalog and the token from it, and on a
        401 invalidates it and authenticates again."""
        c = self._config
        if _ks_session is None:  # pragma: no cover - keystoneauth1 is installed with swift v3
            raise StorageConfigError(
                f"swift store {c.name!r}: Keystone v3 auth needs the keystoneauth1 package"
            )
        auth_url = c.auth_url.rstrip("/")
        if not _VERSIONED_AUTH_PATH.match(urlsplit(auth_url).path.rsplit("/", 1)[-1]):
            auth_url += "/v3"
        auth: Any
        # SwiftConfig has checked that the secret or password goes with its name.
        if c.application_credential_id and c.application_credential_secret is not None:
            auth = _ks_v3.ApplicationCredential(
                auth_url=auth_url,
                application_credential_id=c.application_credential_id,
                application_credential_secret=c.application_credential_secret,
            )
        elif c.password is not None:
            auth = _ks_v3.Password(
                auth_url=auth_url,
                username=c.username,
                password=c.password,
                user_domain_name=c.user_domain_name,
                project_name=c.project_name,
                project_domain_name=c.project_domain_name,
            )
        else:
            raise StorageConfigError(f"swift store {c.name!r}: Keystone v3 needs a password")
        region = f" in region {c.region_name!r}" if c.region_name else ""
        missing = (
            None
            if c.storage_url
            else f"the service catalog of {_strip_userinfo(auth_url)} has no object-store "
            f"endpoint for interface {c.interface!r}{region}"
        )
        return _CatalogSession(
            missing=missing,
            auth=auth,
            verify=False if c.insecure else (c.cacert or True),
            timeout=c.timeout,
        )

    def _connection(self) -> swiftclient.Connection:
        conn: swiftclient.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = swiftclient.Connection(**self._connection_kwargs())
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        with self._lock:
            url, token = self._shared_url, self._shared_token
        if token is not None and conn.token != token:
            conn.url, conn.token = url, token
        return conn

    def _call(self, op: str, key: str, fn: Callable[[swiftclient.Connection], T]) -> T:
        conn = self._connection()
        with self._errors.mapped(op, key):
            token = conn.token
            try:
                try:
                    return fn(conn)
                except ClientException:
                    # swiftclient drops a token that Swift refused (401) and authenticates
                    # again, but then will not resend an upload from memory. Nothing was
                    # stored: send it once more, which authenticates afresh.
                    if token is None or conn.token is not None:
                        raise
                    return fn(conn)
            finally:
                if conn.url and conn.token:
                    with self._lock:
                        self._shared_url, self._shared_token = conn.url, conn.token

    def _storage_url(self) -> str:
        if self._config.storage_url:
            return self._config.storage_url.rstrip("/")
        with self._lock:
            url = self._shared_url
        if url is None:
            self._call("authenticate", "", lambda conn: conn.head_account())
            with self._lock:
                url = self._shared_url
        if url is None:  # pragma: no cover - swiftclient always sets it after auth
            raise StorageError("swift: the auth service returned no storage URL")
        return url.rstrip("/")

    # --- StorageBackend ------------------------------------------------------------------

    def _ensure_container(self, container: str) -> None:
        if container in self._containers:
            return
        self._call("create container", container, lambda conn: conn.put_container(container))
        self._containers.add(container)

    def put(self, key: str, data: bytes) -> None:
        container, name = split_key(key)
        payload = bytes(data)
        etag = hashlib.md5(payload, usedforsecurity=False).hexdigest()

        def upload(conn: swiftclient.Connection) -> None:
            conn.put_object(
                container,
                name,
                contents=payload,
                content_length=len(payload),
                etag=etag,
                content_type="application/octet-stream",
            )

        self._ensure_container(container)
        try:
            self._call("put", key, upload)
        except ObjectNotFoundError:
            # The container went away after we created it: create it again, once.
            self._containers.discard(container)
            self._ensure_container(container)
            self._call("put", key, upload)

    def get(self, key: str) -> bytes:
        container, name = split_key(key)
        headers, body = self._call("get", key, lambda conn: conn.get_object(container, name))
        data = bytes(body)
        etag = str(headers.get("etag", "")).strip('"')
        if (
            len(etag) == 32
            and "x-static-large-object" not in headers
            and "x-object-manifest" not in headers
            and hashlib.md5(data, usedforsecurity=False).hexdigest() != etag
        ):
            raise TransientStorageError(f"swift get {key!r}: body does not match its ETag")
        return data

    def stat(self, key: str) -> ObjectInfo:
        container, name = split_key(key)
        headers = self._call("stat", key, lambda conn: conn.head_object(container, name))
        return ObjectInfo(key=key, size=int(headers["content-length"]))

    def list(self, prefix: str) -> list[str]:
        container, name_prefix = split_prefix(prefix)
        try:
            _, objects = self._call(
                "list",
                prefix,
                lambda conn: conn.get_container(
                    container, prefix=name_prefix or None, full_listing=True
                ),
            )
        except ObjectNotFoundError:
            return []
        return sorted(f"{container}/{o['name']}" for o in objects if "name" in o)

    def delete(self, key: str) -> None:
        container, name = split_key(key)
        try:
            self._call("delete", key, lambda conn: conn.delete_object(container, name))
        except ObjectNotFoundError:
            return

    def url_for(self, key: str) -> str:
        container, name = split_key(key)
        return f"{self._storage_url()}/{quote(container, safe='')}/{quote(name, safe='/')}"

    def key_for_url(self, url: str) -> str | None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return None
        account_path = urlsplit(self._storage_url()).path.rstrip("/")
        if not parts.path.startswith(account_path + "/"):
            return None
        if parts.query or parts.fragment:
            raise InvalidKeyError("object URL must not have a query or fragment")
        return validate_key(unquote(parts.path[len(account_path) + 1 :]))

    def check(self) -> None:
        self._call("check", "", lambda conn: conn.head_account())

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
