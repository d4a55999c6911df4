"""`strongroom catalog rebuild`: the metadata of the backups a store holds, recreated from
their manifests after the metadata database was lost.

A manifest is trusted only as the service trusts one at restore: it parses, carries this
service's key id, its wrapped data key opens and its MAC verifies, it sits at its own
backup id's place, and each parent up to the full backup does the same, lies beside it
with the SHA-256 the child recorded, and belongs to the same project and datastore. Anything
else is reported and skipped. Rows that already exist are left as they are, so a second
run changes nothing. The service's own metadata backups (``SERVICE_PROJECT``) are never
imported as a tenant's."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from strongroom.domain.model import (
    SERVICE_PROJECT,
    Backup,
    BackupId,
    BackupState,
    Datastore,
    DatastoreVersion,
    Instance,
    InstanceId,
    InstanceKind,
    InstanceStatus,
    ProjectId,
)
from strongroom.domain.ports import UnitOfWorkFactory
from strongroom.offline.chain import Link, read_link
from strongroom.persistence.recovery import instance_ids
from strongroom.pipeline.errors import FormatError
from strongroom.pipeline.keys import MasterKey
from strongroom.pipeline.manifest import Manifest
from strongroom.pipeline.reader import OpenedManifest
from strongroom.services import object_layout
from strongroom.services.datastores import datastore_id, version_id
from strongroom.services.job_handlers import size_in_gb
from strongroom.services.quotas import BACKUPS
from strongroom.storage.base import StorageBackend
from strongroom.storage.errors import StorageError

# Neither name is in a manifest: a recovered record says where it came from instead.
BACKUP_NAME = "recovered-{short}"
INSTANCE_NAME = "detached-{short}"


@dataclass
class RebuildReport:
    imported: list[str] = field(default_factory=list)  # backup ids added
    present: list[str] = field(default_factory=list)  # already in the metadata
    instances: list[str] = field(default_factory=list)  # detached instances added
    skipped: dict[str, str] = field(default_factory=dict)  # manifest key → why
    not_tenant: list[str] = field(default_factory=list)  # the service's own backups


def scan(
    store: StorageBackend, container: str, key: MasterKey
) -> tuple[dict[str, Link], dict[str, str]]:
    """Every manifest in ``container`` that verifies, by backup id; and the keys of
    those that do not, with the reason."""
    links: dict[str, Link] = {}
    problems: dict[str, str] = {}
    for name in store.list(f"{container}/"):
        parsed = object_layout.parse(name)
        if parsed is None or parsed.kind is not object_layout.ObjectKind.MANIFEST:
            continue
        try:
            link = read_link(store, name, key, parsed.backup_id)[0]
        except (FormatError, StorageError) as exc:
            problems[name] = str(exc)
            continue
        # Verified: keep what the catalog records, not the chunk list (the bulk of a large
        # backup's manifest) nor the data key.
        slim = dataclasses.replace(link.opened.manifest, chunks=[])
        links[parsed.backup_id] = Link(
            link.manifest_key, OpenedManifest(slim, b""), link.raw_sha256
        )
    return links, problems


def _own_problem(manifest: Manifest, links: dict[str, Link]) -> str | None:
    """Why this link cannot be trusted as a child of its parent (None: it can)."""
    if manifest.parent_id is None:
        return None
    parent = links.get(manifest.parent_id)
    if parent is None:
        return f"its parent {manifest.parent_id} is not beside it or does not verify"
    if parent.raw_sha256 != manifest.parent_manifest_sha256:
        return f"its parent {manifest.parent_id}'s manifest is not the one it recorded"
    other = parent.opened.manifest
    if other.project_id != manifest.project_id or other.datastore != manifest.datastore:
        return f"its parent {manifest.parent_id} belongs to another project or datastore"
    return None


def judge(links: dict[str, Link]) -> dict[str, str | None]:
    """Backup id → None when its whole chain is trusted, else the reason it is not."""
    verdicts: dict[str, str | None] = {}
    for start in links:
        path: list[str] = []
        current = start
        while current not in verdicts:
            if current in path:  # cannot happen with intact digests; never loop
                for bid in path:
                    verdicts[bid] = "its chain loops"
                break
            manifest = links[current].opened.manifest
            problem = _own_problem(manifest, links)
            if problem is not None or manifest.parent_id is None:
                verdicts[current] = problem
                break
            path.append(current)
            current = manifest.parent_id
        for child in reversed(path):
            if child in verdicts:
                continue
            parent = links[child].opened.manifest.parent_id
            assert parent is not None
            reason = verdicts[parent]
            verdicts[child] = None if reason is None else f"its parent {parent}: {reason}"
    return verdicts


def rebuild(
    *,
    store_name: str,
    store: StorageBackend,
    containers: Iterable[str],
    key: MasterKey,
    uow: UnitOfWorkFactory,
    sessions: sessionmaker[Session],
    host: str,
    now: datetime | None = None,
) -> RebuildReport:
    report = RebuildReport()
    trusted: list[Link] = []
    for container in containers:
        links, problems = scan(store, container, key)
        report.skipped.update(problems)
        for backup_id, reason in judge(links).items():
            link = links[backup_id]
            if link.opened.manifest.project_id == SERVICE_PROJECT:
                report.not_tenant.append(backup_id)
            elif reason is not None:
                report.skipped[link.manifest_key] = reason
            else:
                trusted.append(link)
    trusted.sort(key=lambda link: (link.opened.manifest.created, link.opened.manifest.backup_id))
    _record(trusted, store_name, store, uow, sessions, host, now or datetime.now(UTC), report)
    return report


def _created(manifest: Manifest) -> datetime:
    created = datetime.fromisoformat(manifest.created)
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def _version(manifest: Manifest) -> DatastoreVersion | None:
    if manifest.datastore is None or manifest.datastore_version is None:
        return None
    name, version = manifest.datastore, manifest.datastore_version
    return DatastoreVersion(version_id(name, version), datastore_id(name), name, version)


def _record(
    links: list[Link],
    store_name: str,
    store: StorageBackend,
    uow_factory: UnitOfWorkFactory,
    sessions: sessionmaker[Session],
    host: str,
    now: datetime,
    report: RebuildReport,
) -> None:
    with sessions() as session:
        instances_known = instance_ids(session)
    with uow_factory(write=True) as uow:
        known_versions = {v.id for d in uow.datastores.all() for v in d.versions}
        added_per_project: dict[str, int] = {}
        for link in links:
            m = link.opened.manifest
            if uow.backups.find(m.backup_id) is not None:
                report.present.append(m.backup_id)
                continue
            version = _version(m)
            if version is not None and version.id not in known_versions:
                # Inactive until an engine on a host detects that version again.
                inactive = DatastoreVersion(
                    version.id, version.datastore_id, version.datastore_name, version.name, False
                )
                uow.datastores.ensure(
                    Datastore(version.datastore_id, version.datastore_name, None, (inactive,))
                )
                known_versions.add(version.id)
            if m.instance_id and version is not None and m.instance_id not in instances_known:
                uow.instances.add(_detached(m, version, host, now), None)
                instances_known.add(m.instance_id)
                report.instances.append(m.instance_id)
            uow.backups.add(_backup(m, link, version, store_name, store, now))
            added_per_project[m.project_id] = added_per_project.get(m.project_id, 0) + 1
            report.imported.append(m.backup_id)
        for project, added in added_per_project.items():
            in_use = uow.quotas.lock_in_use(project, BACKUPS)
            uow.quotas.set_in_use(project, BACKUPS, in_use + added)
        uow.commit()


def _detached(m: Manifest, version: DatastoreVersion, host: str, now: datetime) -> Instance:
    assert m.instance_id is not None
    return Instance(
        id=InstanceId(m.instance_id),
        project_id=ProjectId(m.project_id),
        name=INSTANCE_NAME.format(short=m.instance_id[:8]),
        kind=InstanceKind.EXTERNAL,  # the service holds nothing of it: deletes touch no files
        datastore_version_id=version.id,
        status=InstanceStatus.DETACHED,
        created=_created(m),
        updated=now,
        host=host,
    )


def _backup(
    m: Manifest,
    link: Link,
    version: DatastoreVersion | None,
    store_name: str,
    store: StorageBackend,
    now: datetime,
) -> Backup:
    return Backup(
        id=BackupId(m.backup_id),
        project_id=ProjectId(m.project_id),
        name=BACKUP_NAME.format(short=m.backup_id[:8]),
        description=None,
        instance_id=InstanceId(m.instance_id) if m.instance_id else None,
        parent_id=BackupId(m.parent_id) if m.parent_id else None,
        state=BackupState.COMPLETED,
        created=_created(m),
        updated=now,
        datastore_version_id=version.id if version else None,
        size_gb=size_in_gb(m.plain_bytes),
        location_ref=store.url_for(link.manifest_key),
        store_name=store_name,
        container=object_layout.container_of(link.manifest_key),
        stored_bytes=m.stored_bytes,
    )
