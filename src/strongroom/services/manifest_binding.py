"""A manifest read for a backup row must be that row's manifest.

Anyone who can write to a store can copy one backup's objects over another's: each copy
still verifies under the master key. So before an engine gets a byte, the manifest found
at a row's location is compared with the row: its ids for a backup this service took,
the SHA-256 recorded at registration for a ``restore_from`` backup."""

from __future__ import annotations

from strongroom.domain.model import Backup, BackupState
from strongroom.pipeline.errors import IntegrityError
from strongroom.pipeline.manifest import Manifest


class ManifestMismatchError(IntegrityError):
    """The manifest at a backup's location belongs to another backup (or was replaced)."""


def check_manifest_belongs_to(manifest: Manifest, raw_sha256: str, backup: Backup) -> None:
    """Raise ManifestMismatchError unless ``manifest`` (whose bytes hash to ``raw_sha256``)
    is the one ``backup`` refers to. The reason names the fields that differ, not their
    values: those would name another project's backup."""
    if backup.state is BackupState.RESTORED:
        if backup.manifest_sha256 is None:
            raise ManifestMismatchError(
                f"backup {backup.id} was registered before registrations recorded their "
                "manifest's SHA-256: register its location again"
            )
        if raw_sha256 != backup.manifest_sha256:
            raise ManifestMismatchError(
                f"the manifest at the location of backup {backup.id} is not the one "
                "registered (its SHA-256 differs)"
            )
        return
    differ = [
        name
        for name, stored, expected in (
            ("backup_id", manifest.backup_id, backup.id),
            ("project_id", manifest.project_id, backup.project_id),
            ("instance_id", manifest.instance_id, backup.instance_id),
            ("parent_id", manifest.parent_id, backup.parent_id),
        )
        if stored != expected
    ]
    if differ:
        raise ManifestMismatchError(
            f"the manifest stored for backup {backup.id} belongs to another backup "
            f"(not as the metadata records: {', '.join(differ)})"
        )
