"""Which manifests a catalog rebuild trusts: a backup is imported only when every link of
its chain is beside it, is the manifest its child recorded, and belongs to the same
project and datastore. The links are real manifests signed with a real master key."""

from __future__ import annotations

import hashlib
import os
import uuid

from strongroom.offline.catalog import judge
from strongroom.offline.chain import Link
from strongroom.pipeline.keys import MasterKey
from strongroom.pipeline.manifest import ChunkRef, CompressionParams, EncryptionParams, Manifest
from strongroom.pipeline.reader import open_manifest

KEY = MasterKey.generate()


def link(project: str, parent: Link | None = None, datastore: str = "sqlite") -> Link:
    backup_id = str(uuid.uuid4())
    data_key = os.urandom(32)
    manifest = Manifest(
        format_version=1,
        backup_id=backup_id,
        project_id=project,
        instance_id=None,
        datastore=datastore,
        datastore_version="3",
        engine={},
        parent_id=parent.opened.manifest.backup_id if parent else None,
        parent_manifest_sha256=parent.raw_sha256 if parent else None,
        created="2026-01-01T00:00:00+00:00",
        chunk_size=4,
        chunks=[ChunkRef(0, 40, 0, "0" * 64)],
        plain_bytes=0,
        stored_bytes=40,
        compression=CompressionParams("zstd", 1),
        encryption=EncryptionParams(
            "AES-256-GCM", KEY.key_id, KEY.wrap(data_key, backup_id=backup_id)
        ),
    ).signed(data_key)
    raw = manifest.to_bytes()
    opened = open_manifest(raw, KEY, expected_backup_id=backup_id)
    return Link(f"c/{backup_id}/manifest.json", opened, hashlib.sha256(raw).hexdigest())


def by_id(*links: Link) -> dict[str, Link]:
    return {x.opened.manifest.backup_id: x for x in links}


def test_a_whole_chain_is_trusted() -> None:
    full = link("a")
    incr = link("a", full)
    incr2 = link("a", incr)
    verdicts = judge(by_id(incr2, incr, full))
    assert set(verdicts.values()) == {None}


def test_a_missing_parent_untrusts_the_child_and_its_descendants() -> None:
    full = link("a")
    incr = link("a", full)
    incr2 = link("a", incr)
    verdicts = judge(by_id(incr2, incr))
    assert "not beside it" in (verdicts[incr.opened.manifest.backup_id] or "")
    assert f"its parent {incr.opened.manifest.backup_id}" in (
        verdicts[incr2.opened.manifest.backup_id] or ""
    )


def test_a_parent_of_another_project_is_not_followed() -> None:
    theirs = link("b")
    mine = link("a", theirs)
    verdicts = judge(by_id(theirs, mine))
    assert verdicts[theirs.opened.manifest.backup_id] is None
    assert "another project" in (verdicts[mine.opened.manifest.backup_id] or "")


def test_a_parent_that_is_not_the_recorded_manifest_is_refused() -> None:
    full = link("a")
    incr = link("a", full)
    replaced = Link(full.manifest_key, full.opened, "f" * 64)  # other bytes at its place
    verdicts = judge(by_id(replaced, incr))
    assert "not the one it recorded" in (verdicts[incr.opened.manifest.backup_id] or "")


def test_a_chain_mixing_datastores_is_refused() -> None:
    full = link("a", datastore="postgresql")
    incr = link("a", full, datastore="sqlite")
    assert judge(by_id(full, incr))[incr.opened.manifest.backup_id] is not None
