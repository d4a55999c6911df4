"""Seals instance connection details (they hold database passwords) for the metadata DB."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.domain.errors import DomainError

PREFIX = "v1:"


class SecretBox:
    """AES-256-GCM with the instance id as associated data, so a sealed value cannot be
    moved to another instance's row."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("SecretBox needs a 32-byte key")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    def seal(self, value: dict[str, Any], *, bound_to: str) -> str:
        nonce = os.urandom(12)
        plain = json.dumps(value, separators=(",", ":")).encode()
        sealed = self._aead.encrypt(nonce, plain, bound_to.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str, *, bound_to: str) -> dict[str, Any]:
        if not sealed.startswith(PREFIX):
            raise DomainError("stored connection details have an unknown format")
        raw = base64.b64decode(sealed[len(PREFIX) :])
        try:
            plain = self._aead.decrypt(raw[:12], raw[12:], bound_to.encode())
        except InvalidTag as exc:
            raise DomainError(
                "stored connection details cannot be decrypted with this master key"
            ) from exc
        value: dict[str, Any] = json.loads(plain)
        return value
