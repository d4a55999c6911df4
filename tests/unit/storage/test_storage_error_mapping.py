"""Foreign errors → storage errors, at each adapter's edge (no network)."""

from __future__ import annotations

import pytest
import requests
from botocore import exceptions as boto_exceptions  # type: ignore[import-untyped]
from swiftclient.exceptions import ClientException  # type: ignore[import-untyped]

from strongroom.storage.config import SwiftStoreConfig
from strongroom.storage.errors import (
    ObjectNotFoundError,
    StorageAuthError,
    StorageError,
    TransientStorageError,
)
from strongroom.storage.s3 import _S3Errors
from strongroom.storage.swift import SwiftBackend, _SwiftErrors

SWIFT = _SwiftErrors("'test:tester'", "http://admin:pw@127.0.0.1:18080/auth/v1.0")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ClientException("Object GET failed", http_status=404), ObjectNotFoundError),
        (ClientException("Object GET failed", http_status=401), StorageAuthError),
        (ClientException("Object PUT failed", http_status=403), StorageAuthError),
        (ClientException("Auth GET failed", http_status=401), StorageAuthError),
        (ClientException("Unauthorized. Check username"), StorageAuthError),
        (ClientException("Object PUT failed", http_status=503), TransientStorageError),
        (ClientException("Object PUT failed", http_status=500), TransientStorageError),
        (ClientException("Object PUT failed", http_status=429), TransientStorageError),
        (ClientException("Object PUT failed", http_status=408), TransientStorageError),
        (ClientException("Auth GET failed", http_status=503), TransientStorageError),
        (ClientException("Object PUT failed", http_status=422), StorageError),
        (ClientException("Container PUT failed", http_status=400), StorageError),
        (requests.exceptions.ConnectionError("refused"), TransientStorageError),
        (requests.exceptions.ReadTimeout("slow"), TransientStorageError),
        (TimeoutError(), TransientStorageError),
    ],
)
def test_swift_errors_are_mapped(exc: Exception, expected: type[StorageError]) -> None:
    with pytest.raises(StorageError) as caught, SWIFT.mapped("get", "c/x"):
        raise exc
    assert type(caught.value) is expected
    assert caught.value.__cause__ is exc


def test_swift_auth_error_message_is_clear_and_secret_free() -> None:
    with pytest.raises(StorageAuthError) as caught, SWIFT.mapped("put", "c/x"):
        raise ClientException("Auth GET failed", http_status=401)
    message = str(caught.value)
    assert "refused the credentials of 'test:tester'" in message
    assert "http://127.0.0.1:18080/auth/v1.0" in message
    assert "admin:pw" not in message


def _config(**overrides: object) -> SwiftStoreConfig:
    values: dict[str, object] = {"name": "s", "auth_url": "https://keystone.example/v3"}
    values.update(overrides)
    return SwiftStoreConfig(**values)  # type: ignore[arg-type]


def test_swift_connection_options_v1() -> None:
    backend = SwiftBackend(_config(auth_url="http://h/auth/v1.0", user="a:b", key="k"))
    kwargs = backend._connection_kwargs()
    assert kwargs["retries"] == 0 and kwargs["auth_version"] == "1"
    assert (kwargs["user"], kwargs["key"]) == ("a:b", "k")


def test_swift_connection_options_keystone_password() -> None:
    backend = SwiftBackend(
        _config(
            auth_version="3",
            username="u",
            password="p",
            project_name="proj",
            user_domain_name="UD",
            project_domain_name="PD",
            region_name="R1",
            interface="internal",
            storage_url="https://swift.example/v1/AUTH_x/",
        )
    )
    kwargs = backend._connection_kwargs()
    assert (kwargs["user"], kwargs["key"], kwargs["auth_version"]) == ("u", "p", "3")
    assert kwargs["os_options"] == {
        "project_name": "proj",
        "user_domain_name": "UD",
        "project_domain_name": "PD",
        "region_name": "R1",
        "endpoint_type": "internal",
        "object_storage_url": "https://swift.example/v1/AUTH_x",
    }
    assert backend.url_for("c/a b") == "https://swift.example/v1/AUTH_x/c/a%20b"
    assert backend.key_for_url("http://other-host:8080/v1/AUTH_x/c/a%20b") == "c/a b"
    assert backend.key_for_url("https://swift.example/v1/AUTH_y/c/x") is None
    assert backend.key_for_url("s3://c/x") is None


def test_swift_connection_options_application_credential() -> None:
    backend = SwiftBackend(
        _config(auth_version="3", application_credential_id="id", application_credential_secret="s")
    )
    options = backend._connection_kwargs()["os_options"]
    assert options["auth_type"] == "v3applicationcredential"
    assert (options["application_credential_id"], options["application_credential_secret"]) == (
        "id",
        "s",
    )
    assert "user" not in backend._connection_kwargs()


def _client_error(code: str, status: int) -> boto_exceptions.ClientError:
    return boto_exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


S3 = _S3Errors("http://127.0.0.1:18080", "AKIAIOSFODNN7EXAMPLE")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_client_error("NoSuchKey", 404), ObjectNotFoundError),
        (_client_error("NoSuchBucket", 404), ObjectNotFoundError),
        (_client_error("404", 404), ObjectNotFoundError),
        (_client_error("InvalidAccessKeyId", 403), StorageAuthError),
        (_client_error("SignatureDoesNotMatch", 403), StorageAuthError),
        (_client_error("AccessDenied", 403), StorageAuthError),
        (_client_error("SlowDown", 503), TransientStorageError),
        (_client_error("InternalError", 500), TransientStorageError),
        (_client_error("RequestTimeout", 400), TransientStorageError),
        (_client_error("InvalidBucketName", 400), StorageError),
        (_client_error("EntityTooLarge", 400), StorageError),
        (boto_exceptions.EndpointConnectionError(endpoint_url="http://x"), TransientStorageError),
        (boto_exceptions.ReadTimeoutError(endpoint_url="http://x"), TransientStorageError),
        (boto_exceptions.ConnectTimeoutError(endpoint_url="http://x"), TransientStorageError),
        (boto_exceptions.NoCredentialsError(), StorageAuthError),
        (boto_exceptions.ParamValidationError(report="bad"), StorageError),
    ],
)
def test_s3_errors_are_mapped(exc: Exception, expected: type[StorageError]) -> None:
    with pytest.raises(StorageError) as caught, S3.mapped("get", "b/x"):
        raise exc
    assert type(caught.value) is expected
    assert caught.value.__cause__ is exc


def test_s3_auth_error_shows_only_part_of_the_access_key() -> None:
    with pytest.raises(StorageAuthError) as caught, S3.mapped("get", "b/x"):
        raise _client_error("InvalidAccessKeyId", 403)
    assert "AKIA..." in str(caught.value)
    assert "AKIAIOSFODNN7EXAMPLE" not in str(caught.value)
