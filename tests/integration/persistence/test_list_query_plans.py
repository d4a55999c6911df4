"""The backup list pages are read from an index in their order, never sorted: with a
project's backups spread over many instances, a page of one instance's must not walk the
others' rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from strongroom.persistence import migrate
from strongroom.persistence.backup_repository import _backup_page


@pytest.mark.parametrize(
    ("instance", "index"),
    [(False, "ix_backups_project_order"), (True, "ix_backups_instance_order")],
)
def test_a_list_page_reads_its_index_in_order(tmp_path: Path, instance: bool, index: str) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate.upgrade(engine)
    stmt = _backup_page(project=True, instance=instance, versions=False, states=False, limited=True)
    compiled = stmt.compile(engine)
    values = compiled.construct_params(
        {"project_id": "p", "instance_id": "i", "offset": 0, "limit": 20}
    )
    assert compiled.positiontup is not None  # SQLite's placeholders are positional
    with engine.connect() as conn:
        plan = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + str(compiled),
            tuple(values[name] for name in compiled.positiontup),
        ).all()
    details = " | ".join(row[-1] for row in plan)
    assert f"USING INDEX {index}" in details, details
    assert "TEMP B-TREE" not in details, details  # no sort of the matching rows
