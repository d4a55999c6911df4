"""S3 backend (boto3): a key's container is the bucket, the rest is the object key.

* Buckets are created on first put (``HEAD`` then ``PUT`` if missing, once per bucket per
  backend instance while it is among the last few hundred used); the service lets a
  request name only the containers of its ``allowed_containers`` setting. Bucket names
  must also satisfy S3's rules: 3 to 63 characters of lower-case letters, digits, ``.``,
  ``-`` and ``_``, starting and ending with a letter or digit, no ``..``, not an IPv4
  address. The underscore is outside today's AWS rules: a request naming a new container
  is held to them (``keys.validate_s3_bucket``, checked by the service), but objects in
  existing buckets with an underscore (Swift's s3api with ``dns_compliant_bucket_names =
  false``, Ceph RGW, legacy AWS buckets) stay readable here.
* Objects larger than ``multipart_threshold`` are uploaded in parts (aborted on failure);
  the object appears only when the upload completes. Uploads carry Content-MD5.
* URLs are ``s3://<bucket>/<key>`` with the key percent-encoded like a URL path (plain keys
  such as ``b1/0000.chunk`` read as they are). ``key_for_url`` accepts any ``s3://`` URL: an
  S3 URL does not name its endpoint, so the first S3 store asked claims it.
* botocore's own retries are off (``total_max_attempts=1``); RetryingBackend retries. One
  client (thread-safe) per backend, from a session of its own.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import ipaddress
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import boto3  # type: ignore[import-untyped]
from botocore import exceptions as boto_exceptions  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from strongroom.storage.base import ObjectInfo
from strongroom.storage.config import S3StoreConfig
from strongroom.storage.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    StorageAuthError,
    StorageError,
    TransientStorageError,
)
from strongroom.storage.keys import split_key, split_prefix, validate_key
from strongroom.storage.recent import RecentNames

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")

_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AllAccessDisabled",
        "AccountProblem",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404", "NoSuchUpload"})
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
        "BadDigest",
        "IncompleteBody",
    }
)
_TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    boto_exceptions.ConnectionError,
    boto_exceptions.HTTPClientError,
    boto_exceptions.ResponseStreamingError,
    boto_exceptions.IncompleteReadError,
    ConnectionError,
    TimeoutError,
)


def validate_bucket(bucket: str) -> str:
    """Return ``bucket`` if S3 accepts it as a bucket name (see the module docstring)."""
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise InvalidKeyError(
            f"bucket name {bucket!r} is not allowed: 3-63 characters of a-z 0-9 . - _, "
            "starting and ending with a letter or digit"
        )
    try:
        ipaddress.IPv4Address(bucket)
    except ValueError:
        return bucket
    raise InvalidKeyError(f"bucket name {bucket!r} must not look like an IP address")


def _shown_access_key(access_key: str | None) -> str:
    if not access_key:
        return "(default credentials)"
    return repr(access_key if len(access_key) <= 12 else access_key[:4] + "...")


class _S3Errors:
    def __init__(self, endpoint: str, access_key: str | None) -> None:
        self._endpoint = endpoint
        self._who = _shown_access_key(access_key)

    @contextmanager
    def mapped(self, op: str, key: str) -> Iterator[None]:
        what = f"s3 {op} {key!r}" if key else f"s3 {op}"
        try:
            yield
        except boto_exceptions.ClientError as exc:
            raise self._from_client_error(exc, what) from exc
        except (boto_exceptions.NoCredentialsError, boto_exceptions.PartialCredentialsError) as exc:
            raise StorageAuthError(f"{what}: no usable S3 credentials configured") from exc
        except _TRANSIENT_EXCEPTIONS as exc:
            raise TransientStorageError(
                f"{what}: connection to {self._endpoint} failed ({type(exc).__name__})"
            ) from exc
        except boto_exceptions.BotoCoreError as exc:
            raise StorageError(f"{what}: {type(exc).__name__}") from exc

    def _from_client_error(self, exc: boto_exceptions.ClientError, what: str) -> StorageError:
        error: dict[str, Any] = dict(exc.response.get("Error", {}))
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        detail = f"{code or 'error'} (HTTP {status})" if status else code or "error"
        if code in _AUTH_CODES or status in (401, 403):
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 401:
                return StorageAuthError(
                    f"s3: {self._endpoint} refused the credentials of access key "
                    f"{self._who}: {detail}"
                )
            return StorageAuthError(
                f"{what}: {self._endpoint} denied access key {self._who}: {detail} "
                "(wrong credentials or missing permission)"
            )
        if code in _NOT_FOUND_CODES or status == 404:
            return ObjectNotFoundError(f"{what}: not found ({code or status})")
        if code in _TRANSIENT_CODES or status >= 500 or status in (408, 429):
            return TransientStorageError(f"{what}: {detail}")
        return StorageError(f"{what}: {detail}")


class S3Backend:
    """One S3 endpoint and credential set. See the module docstring."""

    def __init__(self, config: S3StoreConfig) -> None:
        self._config = config
        botocore_config = Config(
            region_name=config.region,
            signature_version="s3v4",
            s3={"addressing_style": config.addressing_style},
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},
            request_checksum_calculation=config.checksum_mode,
            response_checksum_validation=config.checksum_mode,
            max_pool_connections=32,
        )
        session = boto3.session.Session()
        self._client: Any = session.client(
            "s3",
            endpoint_url=config.endpoint_url,
            aws_access_key_id=config.access_key,
            aws_secret_access_key=config.secret_key,
            region_name=config.region,
            verify=config.verify_tls,
            config=botocore_config,
        )
        self._buckets = RecentNames()  # bounded: requests name containers
        self._errors = _S3Errors(config.endpoint_url or "AWS S3", config.access_key)

    @property
    def config(self) -> S3StoreConfig:
        return self._config

    def _split(self, key: str) -> tuple[str, str]:
        bucket, name = split_key(key)
        return validate_bucket(bucket), name

    def _ensure_bucket(self, bucket: str) -> None:
        if bucket in self._buckets:
            return
        try:
            with self._errors.mapped("head bucket", bucket):
                self._client.head_bucket(Bucket=bucket)
        except ObjectNotFoundError:
            args: dict[str, Any] = {"Bucket": bucket}
            if self._config.region != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": self._config.region}
            try:
                with self._errors.mapped("create bucket", bucket):
                    self._client.create_bucket(**args)
            except StorageError as exc:
                cause = exc.__cause__
                if not (
                    isinstance(cause, boto_exceptions.ClientError)
                    and cause.response.get("Error", {}).get("Code") == "BucketAlreadyOwnedByYou"
                ):
                    raise
        self._buckets.add(bucket)

    def put(self, key: str, data: bytes) -> None:
        bucket, name = self._split(key)
        payload = bytes(data)
        self._ensure_bucket(bucket)
        try:
            self._upload(key, bucket, name, payload)
        except ObjectNotFoundError:
            self._buckets.discard(bucket)  # the bucket went away: create it again, once
            self._ensure_bucket(bucket)
            self._upload(key, bucket, name, payload)

    def _upload(self, key: str, bucket: str, name: str, payload: bytes) -> None:
        if len(payload) <= self._config.multipart_threshold:
            with self._errors.mapped("put", key):
                self._client.put_object(
                    Bucket=bucket,
                    Key=name,
                    Body=payload,
                    ContentMD5=_md5_b64(payload),
                    ContentType="application/octet-stream",
                )
            return
        with self._errors.mapped("put (start multipart)", key):
            upload_id = self._client.create_multipart_upload(
                Bucket=bucket, Key=name, ContentType="application/octet-stream"
            )["UploadId"]
        try:
            parts = []
            size = self._config.multipart_chunksize
            with self._errors.mapped("put (part)", key):
                for number, start in enumerate(range(0, len(payload), size), start=1):
                    chunk = payload[start : start + size]
                    etag = self._client.upload_part(
                        Bucket=bucket,
                        Key=name,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ContentMD5=_md5_b64(chunk),
                    )["ETag"]
                    parts.append({"PartNumber": number, "ETag": etag})
            with self._errors.mapped("put (complete multipart)", key):
                self._client.complete_multipart_upload(
                    Bucket=bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            # Best effort: the upload error is the one to report.
            with suppress(Exception):
                self._client.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload_id)
            raise

    def get(self, key: str) -> bytes:
        bucket, name = self._split(key)
        with self._errors.mapped("get", key):
            response = self._client.get_object(Bucket=bucket, Key=name)
            data: bytes = response["Body"].read()
        expected = response.get("ContentLength")
        if expected is not None and expected != len(data):
            raise TransientStorageError(f"s3 get {key!r}: got {len(data)} bytes of {expected}")
        return data

    def stat(self, key: str) -> ObjectInfo:
        bucket, name = self._split(key)
        with self._errors.mapped("stat", key):
            response = self._client.head_object(Bucket=bucket, Key=name)
        return ObjectInfo(key=key, size=int(response["ContentLength"]))

    def list(self, prefix: str) -> builtins.list[str]:
        bucket, name_prefix = split_prefix(prefix)
        validate_bucket(bucket)
        keys: builtins.list[str] = []
        try:
            with self._errors.mapped("list", prefix):
                paginator = self._client.get_paginator("list_objects_v2")
                for page in paginator.paginate(Bucket=bucket, Prefix=name_prefix):
                    keys.extend(f"{bucket}/{o['Key']}" for o in page.get("Contents", []))
        except ObjectNotFoundError:
            return []
        return sorted(keys)

    def delete(self, key: str) -> None:
        bucket, name = self._split(key)
        try:
            with self._errors.mapped("delete", key):
                self._client.delete_object(Bucket=bucket, Key=name)
        except ObjectNotFoundError:
            return

    def url_for(self, key: str) -> str:
        bucket, name = self._split(key)
        return f"s3://{bucket}/{quote(name, safe='/')}"

    def key_for_url(self, url: str) -> str | None:
        parts = urlsplit(url)
        if parts.scheme != "s3":
            return None
        if parts.query or parts.fragment:
            raise InvalidKeyError("s3 URL must not have a query or fragment")
        key = validate_key(f"{parts.netloc}/{unquote(parts.path.removeprefix('/'))}")
        self._split(key)
        return key

    def check(self) -> None:
        with self._errors.mapped("check", ""):
            self._client.list_buckets()

    def close(self) -> None:
        self._client.close()


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")
