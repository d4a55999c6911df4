"""object_layout reads back only the keys it makes: anything else is not the service's."""

import pytest

from strongroom.services import object_layout
from strongroom.services.object_layout import ArchiveObject, BackupObject, ObjectKind
from strongroom.storage.base import TEMP_PREFIX

BID = "a3d9b495-6862-47dd-93aa-5b4fc61f66e4"  # fixed, so test ids are the same in every collection


def test_layout_keys_parse_back_to_what_made_them():
    assert object_layout.parse(object_layout.manifest_key("c", BID)) == BackupObject(
        "c", BID, ObjectKind.MANIFEST
    )
    for index in (0, 7, 123_456_789):
        assert object_layout.parse(object_layout.chunk_key("c", BID, index)) == BackupObject(
            "c", BID, ObjectKind.CHUNK
        )
    assert object_layout.parse(f"c/{BID}/{TEMP_PREFIX}x1y2") == BackupObject(
        "c", BID, ObjectKind.TEMPORARY
    )
    assert object_layout.container_of(object_layout.manifest_key("c", BID)) == "c"


@pytest.mark.parametrize(
    "key",
    [
        "other_app/reports/2026/ledger.csv",
        "other_app/ledger.csv",
        f"other_app/{BID}/ledger.csv",
        f"other_app/{BID}/manifest.json.bak",
        f"other_app/{BID}/chunk-1",
        f"other_app/{BID}/chunk-0000000x",
        f"other_app/{BID}/sub/manifest.json",
        f"other_app/{BID.upper()}/manifest.json",
        f"other_app/{BID.replace('-', '')}/manifest.json",
        "other_app/not-a-uuid/manifest.json",
        f"other_app/{TEMP_PREFIX}abc",
        f"other_app/x/{BID}/manifest.json",
    ],
)
def test_keys_outside_the_layout_are_not_the_services(key):
    assert object_layout.parse(key) is None


IID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"


def test_archive_keys_parse_back_and_are_no_backups():
    manifest = object_layout.archive_manifest_key("c", IID, BID)
    assert object_layout.parse_archive(manifest) == ArchiveObject(
        "c", IID, BID, ObjectKind.MANIFEST
    )
    chunk = object_layout.chunk_key_beside(manifest, 3)
    assert object_layout.parse_archive(chunk) == ArchiveObject("c", IID, BID, ObjectKind.CHUNK)
    # Neither is a backup's key (a catalog rebuild or `check` never takes it for one),
    # and a backup's key is no archive's.
    assert object_layout.parse(manifest) is None and object_layout.parse(chunk) is None
    assert object_layout.parse_archive(object_layout.manifest_key("c", BID)) is None


@pytest.mark.parametrize(
    "key",
    [
        f"c/{IID}/wal/{BID}/ledger.csv",
        f"c/{IID}/wal/{BID}/manifest.json.bak",
        f"c/{IID}/log/{BID}/manifest.json",
        f"c/{IID}/wal/{BID.upper()}/manifest.json",
        f"c/not-a-uuid/wal/{BID}/manifest.json",
        f"c/{IID}/wal/../manifest.json",
        f"c/{IID}/wal/{BID}/sub/manifest.json",
        f"c/{IID}/wal/manifest.json",
    ],
)
def test_keys_outside_the_archive_layout_are_not_archive_objects(key):
    assert object_layout.parse_archive(key) is None
