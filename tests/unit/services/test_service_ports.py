"""How services hold their ports: set by keyword (``uow=`` sets the private ``_uow``),
never positionally nor by the private name; no port shows in a repr (a port may hold a
key); services compare by identity; building one starts no thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from strongroom.services.backups import BackupService
from strongroom.services.pitr_archiving import PitrArchiver
from strongroom.services.scheduler import Scheduler


class _Port:
    def __repr__(self) -> str:
        return "<port holding SECRET-KEY>"


def _ports(*names: str) -> dict[str, Any]:
    return {name: _Port() for name in names}


BACKUP_PORTS = ("uow", "clock", "authorizer", "catalog", "stores", "jobs", "rules")


def test_service_ports_are_set_by_keyword_into_private_attributes() -> None:
    ports = _ports(*BACKUP_PORTS)
    service = BackupService(**ports)
    assert service._uow is ports["uow"] and service._authz is ports["authorizer"]
    assert not hasattr(service, "uow") and not hasattr(service, "authorizer")


def test_service_ports_refuse_private_names_positions_and_missing_ports() -> None:
    ports = _ports(*BACKUP_PORTS)
    with pytest.raises(TypeError):
        BackupService(**{("_" + k if k == "uow" else k): v for k, v in ports.items()})
    with pytest.raises(TypeError):
        BackupService(*ports.values())
    with pytest.raises(TypeError):
        BackupService(**_ports(*BACKUP_PORTS[:-1]))


def test_service_ports_repr_shows_no_port_and_equality_is_identity() -> None:
    ports = _ports(*BACKUP_PORTS)
    one, two = BackupService(**ports), BackupService(**ports)
    assert "SECRET" not in repr(one) and "SECRET" not in str(one)
    assert one != two and one == one and len({one, two}) == 2


def test_service_ports_loops_are_built_but_not_started() -> None:
    before = threading.active_count()
    scheduler = Scheduler(**_ports("uow", "clock", "schedules", "verify"), interval=0.01)
    archiver = PitrArchiver(
        **_ports("uow", "clock", "catalog", "secrets", "archive"), host_id="h1", interval=0.01
    )
    assert threading.active_count() == before
    assert archiver._host == "h1" and archiver._loop is not scheduler._loop
    assert scheduler._loop._interval == 0.01 and archiver._loop._interval == 0.01
    assert scheduler._loop._thread is None and archiver._loop._thread is None
