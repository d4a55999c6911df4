"""Operator-tunable rules the use cases apply (filled from Settings by bootstrap)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from strongroom.storage.config import DEFAULT_CONTAINER


@dataclass(frozen=True)
class Flavor:
    id: str
    name: str
    ram: int
    vcpus: int
    disk: int = 0


@dataclass(frozen=True)
class ServiceRules:
    backup_quota: int = 50
    instance_quota: int = 20
    running_backups_expire: timedelta = timedelta(days=3)
    page_size: int = 20
    max_page_size: int = 1000
    max_volume_size: int = 10
    default_container: str = DEFAULT_CONTAINER
    default_store: str = "local"
    flavors: tuple[Flavor, ...] = field(default_factory=tuple)
    chunk_size: int = 4 * 1024 * 1024
    compression_level: int = 1
    transfer_threads: int = 2
    progress_interval: timedelta = timedelta(seconds=1)
    default_host: str = "local"
    worker_lease: timedelta = timedelta(seconds=60)
    # A store's temporary object older than this is a killed writer's: check and the reaper
    # remove it (a live put replaces its temporary object within seconds).
    temporary_object_max_age: timedelta = timedelta(hours=1)
    # An incremental reads its parent chain's pages back (page deltas) when every link is
    # in a local store, and from Swift or S3 (a download) too when this is true
    # (postgresql_page_deltas = true).
    parent_pages_from_remote_stores: bool = False
