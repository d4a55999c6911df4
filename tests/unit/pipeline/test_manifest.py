"""Manifest: serialized form, validation, MAC."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest

from strongroom.pipeline import FormatError, IntegrityError, Manifest, MasterKey

from .builders import compressible, write_backup


@pytest.fixture(scope="module")
def raw_manifest() -> bytes:
    return write_backup(compressible(5000), MasterKey.generate()).manifest_bytes


def edit(raw: bytes, **changes: Any) -> bytes:
    doc = json.loads(raw)
    doc.update(changes)
    return json.dumps(doc).encode()


def test_manifest_round_trip_is_byte_stable(raw_manifest: bytes) -> None:
    manifest = Manifest.from_bytes(raw_manifest)
    assert manifest.to_bytes() == raw_manifest
    assert manifest.sha256() == hashlib.sha256(raw_manifest).hexdigest()
    assert Manifest.from_bytes(json.dumps(json.loads(raw_manifest)).encode()) == manifest


def test_manifest_has_every_field(raw_manifest: bytes) -> None:
    doc = json.loads(raw_manifest)
    assert list(doc) == [
        "format_version",
        "backup_id",
        "project_id",
        "instance_id",
        "datastore",
        "datastore_version",
        "engine",
        "parent_id",
        "parent_manifest_sha256",
        "created",
        "chunk_size",
        "chunks",
        "plain_bytes",
        "stored_bytes",
        "compression",
        "encryption",
        "mac",
    ]
    assert doc["format_version"] == 1
    assert doc["compression"] == {"algorithm": "zstd", "level": 1}
    assert doc["encryption"]["algorithm"] == "AES-256-GCM"
    assert set(doc["chunks"][0]) == {"index", "size", "plain_size", "sha256"}
    assert doc["plain_bytes"] == 5000
    assert doc["stored_bytes"] == sum(c["size"] for c in doc["chunks"])


def test_manifest_one_chunk_per_line(raw_manifest: bytes) -> None:
    lines = raw_manifest.decode().splitlines()
    chunk_lines = [line for line in lines if line.strip().startswith('{"index"')]
    assert len(chunk_lines) == len(json.loads(raw_manifest)["chunks"])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 2}, "unsupported manifest format_version 2"),
        ({"format_version": True}, "unsupported manifest format_version"),
        ({"extra": 1}, "unknown fields: extra"),
        ({"chunk_size": "1024"}, "chunk_size must be an integer"),
        ({"plain_bytes": 1}, "plain_bytes is not the sum"),
        ({"stored_bytes": True}, "stored_bytes must be an integer"),
        ({"backup_id": ""}, "backup_id must be a non-empty string"),
        ({"created": "yesterday"}, "not an ISO 8601 time"),
        ({"chunks": []}, "non-empty list"),
        ({"parent_id": "p"}, "must both be set"),
        ({"compression": {"algorithm": "lz4", "level": 1}}, "unsupported compression"),
        ({"mac": "00"}, "mac must be 64 lowercase hex"),
        ({"engine": []}, "engine must be a JSON object"),
    ],
)
def test_manifest_rejects_malformed(
    raw_manifest: bytes, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(FormatError, match=message):
        Manifest.from_bytes(edit(raw_manifest, **changes))


def test_manifest_rejects_missing_field(raw_manifest: bytes) -> None:
    doc = json.loads(raw_manifest)
    del doc["datastore"]
    with pytest.raises(FormatError, match="missing fields: datastore"):
        Manifest.from_bytes(json.dumps(doc).encode())


def test_manifest_rejects_chunks_out_of_order(raw_manifest: bytes) -> None:
    doc = json.loads(raw_manifest)
    doc["chunks"][0], doc["chunks"][1] = doc["chunks"][1], doc["chunks"][0]
    with pytest.raises(FormatError, match="chunks must be listed in order"):
        Manifest.from_bytes(json.dumps(doc).encode())


@pytest.mark.parametrize("raw", [b"", b"[]", b"\xff\xfe", b"{"])
def test_manifest_rejects_non_object(raw: bytes) -> None:
    with pytest.raises(FormatError):
        Manifest.from_bytes(raw)


def test_manifest_mac_detects_any_field_change(raw_manifest: bytes) -> None:
    manifest = Manifest.from_bytes(raw_manifest)
    key = b"k" * 32
    signed = manifest.signed(key)
    signed.verify(key)
    edits: list[dict[str, Any]] = [
        {"project_id": "proj-2"},
        {"engine": {"start_lsn": "0/3000029", "timeline": 1}},
        {"created": "2024-05-01T12:00:01+00:00"},
        {"chunks": [dataclasses.replace(signed.chunks[0], sha256="0" * 64), *signed.chunks[1:]]},
    ]
    for change in edits:
        with pytest.raises(IntegrityError, match="MAC does not verify"):
            dataclasses.replace(signed, **change).verify(key)
    with pytest.raises(IntegrityError):
        signed.verify(b"j" * 32)
