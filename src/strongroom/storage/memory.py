"""In-memory backend for tests and development. Thread-safe; data lives as long as the object."""

from __future__ import annotations

import threading
from urllib.parse import quote, unquote, urlsplit

from strongroom.storage.base import ObjectInfo
from strongroom.storage.errors import InvalidKeyError, ObjectNotFoundError
from strongroom.storage.keys import split_prefix, validate_container, validate_key


class MemoryBackend:
    """Objects in a dict. URLs are ``memory://<name>/<key>``; ``name`` tells stores apart."""

    def __init__(self, name: str = "memory") -> None:
        self._name = validate_container(name)
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        validate_key(key)
        blob = bytes(data)
        with self._lock:
            self._objects[key] = blob

    def get(self, key: str) -> bytes:
        validate_key(key)
        with self._lock:
            try:
                return self._objects[key]
            except KeyError:
                raise ObjectNotFoundError(f"no object {key!r}") from None

    def stat(self, key: str) -> ObjectInfo:
        return ObjectInfo(key=key, size=len(self.get(key)))

    def list(self, prefix: str) -> list[str]:
        container, name_prefix = split_prefix(prefix)
        full = f"{container}/{name_prefix}"
        with self._lock:
            return sorted(k for k in self._objects if k.startswith(full))

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._lock:
            self._objects.pop(key, None)

    def url_for(self, key: str) -> str:
        return f"memory://{self._name}/{quote(validate_key(key), safe='/')}"

    def key_for_url(self, url: str) -> str | None:
        parts = urlsplit(url)
        if parts.scheme != "memory" or parts.netloc != self._name:
            return None
        if parts.query or parts.fragment:
            raise InvalidKeyError("object URL must not have a query or fragment")
        return validate_key(unquote(parts.path.removeprefix("/")))

    def check(self) -> None:
        return None

    def close(self) -> None:
        return None
