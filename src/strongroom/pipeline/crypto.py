"""Cryptographic primitives of format v1: AES-256-GCM, HKDF-SHA256, HMAC-SHA256.

Only this module (and ``keys``) touches the ``cryptography`` package.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_SIZE: Final = 32
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16

KEY_ID_INFO: Final = b"strongroom key id v1"
MAC_KEY_INFO: Final = b"strongroom manifest mac v1"

BytesLike = bytes | bytearray | memoryview


class AuthenticationFailed(Exception):
    """AES-GCM tag mismatch (internal; callers turn it into a pipeline error with context)."""


def random_key() -> bytes:
    return os.urandom(KEY_SIZE)


def random_nonce() -> bytes:
    return os.urandom(NONCE_SIZE)


def check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise ValueError(f"an AES-256 key is {KEY_SIZE} bytes")
    return bytes(key)


def aead_cipher(key: bytes) -> AESGCM:
    """An AES-256-GCM object; safe to share between threads."""
    return AESGCM(check_key(key))


def seal(cipher: AESGCM, nonce: bytes, plain: BytesLike, ad: bytes) -> bytes:
    """Ciphertext followed by the 16-byte tag."""
    return cipher.encrypt(nonce, plain, ad)


def open_sealed(cipher: AESGCM, nonce: bytes, sealed: BytesLike, ad: bytes) -> bytes:
    """Inverse of :func:`seal`; raises :class:`AuthenticationFailed`."""
    try:
        return cipher.decrypt(nonce, sealed, ad)
    except InvalidTag as exc:
        raise AuthenticationFailed from exc


def hkdf(key: bytes, info: bytes, length: int = KEY_SIZE) -> bytes:
    """HKDF-SHA256 without salt."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


def key_id(master: bytes) -> str:
    """Non-secret fingerprint of a master key: 32 hex characters."""
    return hmac.new(master, KEY_ID_INFO, hashlib.sha256).hexdigest()[:32]


def manifest_mac(data_key: bytes, message: bytes) -> str:
    """Hex HMAC-SHA256 of ``message`` under the MAC key derived from ``data_key``."""
    return hmac.new(hkdf(data_key, MAC_KEY_INFO), message, hashlib.sha256).hexdigest()


def mac_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))
