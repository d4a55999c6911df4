"""Each store kind's rule for a new container name; the default name passes them all."""

from __future__ import annotations

import pytest

from strongroom.config import Settings
from strongroom.storage.config import DEFAULT_CONTAINER
from strongroom.storage.errors import InvalidKeyError
from strongroom.storage.keys import container_rule, validate_s3_bucket
from strongroom.storage.memory import MemoryBackend
from strongroom.storage.registry import StoreSet

GOOD_BUCKETS = ["abc", "database-backups", "a.b-c", "0day", "x" * 63, "my.bucket.1"]
BAD_BUCKETS = [
    "database_backups",  # the underscore (Trove's default, refused by S3)
    "ab",
    "x" * 64,
    "Upper",
    "-start",
    "end-",
    ".dot",
    "a..b",
    "192.168.1.2",
    "a b",
    "a/b",
    "",
]


@pytest.mark.parametrize("name", GOOD_BUCKETS)
def test_s3_accepts_bucket_names(name: str) -> None:
    assert validate_s3_bucket(name) == name


@pytest.mark.parametrize("name", BAD_BUCKETS)
def test_s3_refuses_what_s3_refuses(name: str) -> None:
    with pytest.raises(InvalidKeyError, match="S3 bucket name"):
        validate_s3_bucket(name)


@pytest.mark.parametrize("name", ["database_backups", "Upper_Case", "a@b", "x" * 255])
@pytest.mark.parametrize("kind", ["local", "swift"])
def test_local_and_swift_keep_the_key_rule(kind: str, name: str) -> None:
    assert container_rule(kind)(name) == name


@pytest.mark.parametrize("kind", ["local", "swift"])
@pytest.mark.parametrize("name", ["a/b", "..", "", "x" * 256, "a b"])
def test_local_and_swift_refuse_paths_and_odd_names(kind: str, name: str) -> None:
    with pytest.raises(InvalidKeyError):
        container_rule(kind)(name)


@pytest.mark.parametrize("kind", ["local", "swift", "s3"])
def test_the_default_container_is_valid_on_every_kind(kind: str) -> None:
    assert DEFAULT_CONTAINER == Settings().default_container == "database-backups"
    container_rule(kind)(DEFAULT_CONTAINER)


def test_a_store_set_applies_each_stores_rule() -> None:
    stores = StoreSet({"disk": MemoryBackend(), "s3": MemoryBackend()}, "disk", {"s3": "s3"})
    assert stores.check_container("disk", "database_backups") == "database_backups"
    with pytest.raises(InvalidKeyError):
        stores.check_container("s3", "database_backups")
    assert stores.check_container("s3", "database-backups") == "database-backups"
