"""Where a backup's objects live in a store. Object keys are made here and nowhere else."""

from __future__ import annotations

MANIFEST_NAME = "manifest.json"


def backup_prefix(container: str, backup_id: str) -> str:
    return f"{container}/{backup_id}/"


def manifest_key(container: str, backup_id: str) -> str:
    return f"{container}/{backup_id}/{MANIFEST_NAME}"


def chunk_key(container: str, backup_id: str, index: int) -> str:
    return f"{container}/{backup_id}/chunk-{index:08d}"


def container_of(key: str) -> str:
    """The container of an object key."""
    return key.split("/", 1)[0]


def sibling_manifest_key(manifest: str, backup_id: str) -> str:
    """The manifest of ``backup_id`` in the same container as the ``manifest`` key."""
    return manifest_key(container_of(manifest), backup_id)


def chunk_key_beside(manifest: str, index: int) -> str:
    """The key of chunk ``index`` stored next to the ``manifest`` key."""
    directory = manifest.rsplit("/", 1)[0]
    return f"{directory}/chunk-{index:08d}"
