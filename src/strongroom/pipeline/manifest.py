"""The backup manifest: schema, canonical form, MAC (docs/format.md sections 4-5)."""

from __future__ import annotations

import binascii
import dataclasses
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from strongroom.pipeline import compress, crypto
from strongroom.pipeline.checksum import sha256_hex
from strongroom.pipeline.errors import FormatError, IntegrityError

MANIFEST_VERSION: Final = 1
COMPRESSION_ALGORITHM: Final = "zstd"
ENCRYPTION_ALGORITHM: Final = "AES-256-GCM"
MAX_CHUNK_SIZE: Final = 1 << 30

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One chunk object: its index, stored size, plaintext size and SHA-256 of the object."""

    index: int
    size: int
    plain_size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "size": self.size,
            "plain_size": self.plain_size,
            "sha256": self.sha256,
        }


@dataclass(frozen=True, slots=True)
class CompressionParams:
    algorithm: str
    level: int

    def to_dict(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "level": self.level}


@dataclass(frozen=True, slots=True)
class EncryptionParams:
    algorithm: str
    key_id: str
    wrapped_key: str

    def to_dict(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "key_id": self.key_id, "wrapped_key": self.wrapped_key}


@dataclass(frozen=True)
class Manifest:
    """Everything needed to restore a backup given its chunk objects and the master key.

    ``mac`` is empty until :meth:`signed` is called. Instances are immutable; use
    :func:`dataclasses.replace` then :meth:`signed` to derive a changed manifest.
    """

    format_version: int
    backup_id: str
    project_id: str
    instance_id: str | None
    datastore: str | None
    datastore_version: str | None
    engine: dict[str, Any]
    parent_id: str | None
    parent_manifest_sha256: str | None
    created: str
    chunk_size: int
    chunks: list[ChunkRef]
    plain_bytes: int
    stored_bytes: int
    compression: CompressionParams
    encryption: EncryptionParams
    mac: str = field(default="")

    # -- serialization ------------------------------------------------------------------

    def to_dict(self, *, include_mac: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format_version": self.format_version,
            "backup_id": self.backup_id,
            "project_id": self.project_id,
            "instance_id": self.instance_id,
            "datastore": self.datastore,
            "datastore_version": self.datastore_version,
            "engine": self.engine,
            "parent_id": self.parent_id,
            "parent_manifest_sha256": self.parent_manifest_sha256,
            "created": self.created,
            "chunk_size": self.chunk_size,
            "chunks": [c.to_dict() for c in self.chunks],
            "plain_bytes": self.plain_bytes,
            "stored_bytes": self.stored_bytes,
            "compression": self.compression.to_dict(),
            "encryption": self.encryption.to_dict(),
        }
        if include_mac:
            d["mac"] = self.mac
        return d

    def signing_bytes(self) -> bytes:
        """The canonical JSON the MAC covers: every field but ``mac``."""
        return canonical_json(self.to_dict(include_mac=False))

    def to_bytes(self) -> bytes:
        """The deterministic ``manifest.json`` bytes (one chunk entry per line)."""
        lines = ["{"]
        items = list(self.to_dict().items())
        for n, (key, value) in enumerate(items):
            comma = "," if n < len(items) - 1 else ""
            if key == "chunks":
                lines.append('  "chunks": [')
                for i, chunk in enumerate(value):
                    sep = "," if i < len(value) - 1 else ""
                    lines.append(f"    {_dumps(chunk, compact=False)}{sep}")
                lines.append(f"  ]{comma}")
            else:
                lines.append(f"  {_dumps(key)}: {_dumps(value, compact=False)}{comma}")
        lines.append("}")
        return ("\n".join(lines) + "\n").encode("utf-8")

    def sha256(self) -> str:
        """SHA-256 of :meth:`to_bytes`: what a child records as ``parent_manifest_sha256``."""
        return sha256_hex(self.to_bytes())

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        """Parse and validate structure (not the MAC); raises FormatError."""
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"manifest is not valid JSON: {exc}") from exc
        return _from_dict(doc)

    # -- MAC ----------------------------------------------------------------------------

    def signed(self, data_key: bytes) -> Manifest:
        """A copy carrying the MAC computed with ``data_key``."""
        return dataclasses.replace(self, mac=crypto.manifest_mac(data_key, self.signing_bytes()))

    def verify(self, data_key: bytes) -> None:
        """Raise IntegrityError unless ``mac`` matches the content under ``data_key``."""
        expected = crypto.manifest_mac(data_key, self.signing_bytes())
        if not crypto.mac_equal(expected, self.mac):
            raise IntegrityError(
                f"backup {self.backup_id}: manifest MAC does not verify "
                "(the manifest was edited after it was written)"
            )


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _dumps(value: Any, *, compact: bool = True) -> str:
    sep = (",", ":") if compact else (", ", ": ")
    return json.dumps(value, separators=sep, ensure_ascii=True, allow_nan=False)


def check_engine(engine: Any) -> dict[str, Any]:
    """``engine`` must survive a JSON round trip unchanged (so the MAC verifies on read)."""
    if not isinstance(engine, dict):
        raise FormatError("manifest field engine must be a JSON object")
    try:
        same = json.loads(_dumps(engine)) == engine
    except (TypeError, ValueError) as exc:
        raise FormatError(f"manifest field engine is not JSON: {exc}") from exc
    if not same:
        raise FormatError("manifest field engine does not survive a JSON round trip")
    return engine


# -- validation -----------------------------------------------------------------------

_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Manifest))


def _int(doc: dict[str, Any], key: str, where: str, *, minimum: int = 0) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FormatError(f"{where} field {key} must be an integer >= {minimum}, got {value!r}")
    return value


def _str(doc: dict[str, Any], key: str, where: str, *, nullable: bool = False) -> Any:
    value = doc.get(key)
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value:
        kind = "a non-empty string or null" if nullable else "a non-empty string"
        raise FormatError(f"{where} field {key} must be {kind}, got {value!r}")
    return value


def _object(doc: dict[str, Any], key: str, where: str, keys: set[str]) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise FormatError(f"{where} field {key} must be an object")
    if set(value) != keys:
        raise FormatError(f"{where} field {key} must have exactly the keys {sorted(keys)}")
    return value


def _hex64(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise FormatError(f"{what} must be 64 lowercase hex characters")
    return value


def _from_dict(doc: Any) -> Manifest:
    if not isinstance(doc, dict):
        raise FormatError("manifest must be a JSON object")
    version = doc.get("format_version")
    if version != MANIFEST_VERSION or isinstance(version, bool):
        raise FormatError(f"unsupported manifest format_version {version!r}")
    missing = [k for k in _FIELDS if k not in doc]
    if missing:
        raise FormatError(f"manifest is missing fields: {', '.join(missing)}")
    unknown = sorted(set(doc) - set(_FIELDS))
    if unknown:
        raise FormatError(f"manifest has unknown fields: {', '.join(unknown)}")
    m = "manifest"
    backup_id = _str(doc, "backup_id", m)
    parent_id = _str(doc, "parent_id", m, nullable=True)
    parent_sha = doc["parent_manifest_sha256"]
    if parent_sha is not None:
        _hex64(parent_sha, "manifest field parent_manifest_sha256")
    if (parent_id is None) != (parent_sha is None):
        raise FormatError("manifest fields parent_id and parent_manifest_sha256 must both be set")
    created = _str(doc, "created", m)
    try:
        datetime.fromisoformat(created)
    except ValueError as exc:
        raise FormatError(f"manifest field created is not an ISO 8601 time: {created!r}") from exc
    chunk_size = _int(doc, "chunk_size", m, minimum=1)
    if chunk_size > MAX_CHUNK_SIZE:
        raise FormatError(f"manifest chunk_size {chunk_size} exceeds {MAX_CHUNK_SIZE}")
    chunks = _chunks(doc["chunks"], chunk_size)
    plain_bytes = _int(doc, "plain_bytes", m)
    stored_bytes = _int(doc, "stored_bytes", m)
    if plain_bytes != sum(c.plain_size for c in chunks):
        raise FormatError("manifest plain_bytes is not the sum of the chunks' plain_size")
    if stored_bytes != sum(c.size for c in chunks):
        raise FormatError("manifest stored_bytes is not the sum of the chunks' size")
    comp = _object(doc, "compression", m, {"algorithm", "level"})
    if comp["algorithm"] != COMPRESSION_ALGORITHM:
        raise FormatError(f"unsupported compression algorithm {comp['algorithm']!r}")
    level = _int(comp, "level", "manifest compression", minimum=compress.MIN_LEVEL)
    if level > compress.MAX_LEVEL:
        raise FormatError(f"manifest compression level {level} is out of range")
    enc = _object(doc, "encryption", m, {"algorithm", "key_id", "wrapped_key"})
    if enc["algorithm"] != ENCRYPTION_ALGORITHM:
        raise FormatError(f"unsupported encryption algorithm {enc['algorithm']!r}")
    key_id = _str(enc, "key_id", "manifest encryption")
    wrapped_key = _str(enc, "wrapped_key", "manifest encryption")
    try:
        binascii.a2b_base64(wrapped_key, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError("manifest encryption wrapped_key is not base64") from exc
    return Manifest(
        format_version=version,
        backup_id=backup_id,
        project_id=_str(doc, "project_id", m),
        instance_id=_str(doc, "instance_id", m, nullable=True),
        datastore=_str(doc, "datastore", m, nullable=True),
        datastore_version=_str(doc, "datastore_version", m, nullable=True),
        engine=check_engine(doc["engine"]),
        parent_id=parent_id,
        parent_manifest_sha256=parent_sha,
        created=created,
        chunk_size=chunk_size,
        chunks=chunks,
        plain_bytes=plain_bytes,
        stored_bytes=stored_bytes,
        compression=CompressionParams(COMPRESSION_ALGORITHM, level),
        encryption=EncryptionParams(ENCRYPTION_ALGORITHM, key_id, wrapped_key),
        mac=_hex64(doc["mac"], "manifest field mac"),
    )


def _chunks(value: Any, chunk_size: int) -> list[ChunkRef]:
    if not isinstance(value, list) or not value:
        raise FormatError("manifest field chunks must be a non-empty list")
    refs = []
    last = len(value) - 1
    for position, entry in enumerate(value):
        where = f"manifest chunk {position}"
        if not isinstance(entry, dict) or set(entry) != {"index", "size", "plain_size", "sha256"}:
            raise FormatError(f"{where} must be an object with index, size, plain_size, sha256")
        index = _int(entry, "index", where)
        if index != position:
            raise FormatError(f"{where} has index {index}: chunks must be listed in order")
        size = _int(entry, "size", where)
        plain_size = _int(entry, "plain_size", where)
        if plain_size > chunk_size or (position < last and plain_size != chunk_size):
            raise FormatError(f"{where} has plain_size {plain_size}; chunk_size is {chunk_size}")
        refs.append(ChunkRef(index, size, plain_size, _hex64(entry["sha256"], f"{where} sha256")))
    return refs
