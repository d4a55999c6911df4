"""What the disaster-recovery commands need of the metadata rows beyond the repositories:
every instance id ever recorded (a deleted instance is not recreated by a catalog
rebuild), the values sealed with a key derived from the master key, and the manifest
digests pinned by ``restore_from`` registrations (a key rotation changes them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from strongroom.persistence.tables import BackupRow, InstanceRow, JobRow


def instance_ids(session: Session) -> set[str]:
    """Every instance id in the metadata, deleted ones included."""
    return set(session.execute(select(InstanceRow.id)).scalars())


@dataclass(frozen=True)
class Sealed:
    """One sealed value: an instance's connection or a queued job's payload, bound to the
    instance id (``bound_to``)."""

    where: str  # "instance" or "job"
    row_id: str
    bound_to: str
    value: str


def sealed_values(session: Session) -> list[Sealed]:
    found = [
        Sealed("instance", row_id, row_id, value or "")
        for row_id, value in session.execute(
            select(InstanceRow.id, InstanceRow.connection_sealed).where(
                InstanceRow.connection_sealed.is_not(None)
            )
        )
    ]
    for job in session.execute(select(JobRow)).scalars():
        value = (job.payload or {}).get("sealed")
        if isinstance(value, str):
            found.append(Sealed("job", job.id, job.target_id, value))
    return found


def replace_sealed(session: Session, sealed: Sealed, value: str) -> None:
    if sealed.where == "instance":
        session.execute(
            update(InstanceRow)
            .where(InstanceRow.id == sealed.row_id)
            .values(connection_sealed=value)
        )
        return
    job = session.get(JobRow, sealed.row_id)
    if job is not None:
        job.payload = {**(job.payload or {}), "sealed": value}


def repin_manifests(session: Session, new_digest: Callable[[str, str], str | None]) -> int:
    """Replace every pinned manifest digest ``d`` of a backup in store ``s`` for which
    ``new_digest(s, d)`` is not None; returns how many rows changed."""
    rows = session.execute(
        select(BackupRow.id, BackupRow.store_name, BackupRow.manifest_sha256).where(
            BackupRow.manifest_sha256.is_not(None)
        )
    ).all()
    changed = 0
    for backup_id, store_name, digest in rows:
        replacement = new_digest(store_name or "", digest or "")
        if replacement is not None and replacement != digest:
            session.execute(
                update(BackupRow)
                .where(BackupRow.id == backup_id)
                .values(manifest_sha256=replacement)
            )
            changed += 1
    return changed
