"""Byte pipeline of backup format v1: chunking, zstd, AES-256-GCM, SHA-256, manifest.

Pure byte transforms: nothing here knows about engines, storage or the service database.
The format is specified in docs/format.md.
"""

from strongroom.pipeline.checksum import sha256_hex
from strongroom.pipeline.errors import (
    FormatError,
    IntegrityError,
    MissingChunkError,
    WrongKeyError,
)
from strongroom.pipeline.keys import MasterKey
from strongroom.pipeline.manifest import (
    ChunkRef,
    CompressionParams,
    EncryptionParams,
    Manifest,
)
from strongroom.pipeline.reader import ChunkReader, OpenedManifest, open_manifest
from strongroom.pipeline.writer import BackupWriter

__all__ = [
    "BackupWriter",
    "ChunkReader",
    "ChunkRef",
    "CompressionParams",
    "EncryptionParams",
    "FormatError",
    "IntegrityError",
    "Manifest",
    "MasterKey",
    "MissingChunkError",
    "OpenedManifest",
    "WrongKeyError",
    "open_manifest",
    "sha256_hex",
]
