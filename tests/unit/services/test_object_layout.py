"""object_layout reads back only the keys it makes: anything else is not the service's."""


import pytest

from strongroom.services import object_layout
from strongroom.services.object_layout import BackupObject, ObjectKind
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
