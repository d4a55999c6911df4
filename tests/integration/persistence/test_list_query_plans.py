"""The backup list pages are read from an index in their order, never sorted: with a
project's backups spread over many instances, a page of one instance's must not walk the
others' rows."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from strongroom.persistence import migrate
from strongroom.persistence.backup_repository import _backup_page


@pytest.mark.parametrize("copies", [False, True])
@pytest.mark.parametrize(
    ("instance", "index"),
    [(False, "ix_backups_project_order"), (True, "ix_backups_instance_order")],
)
def test_a_list_page_reads_its_index_in_order(
    tmp_path: Path, instance: bool, index: str, copies: bool
) -> None:
    """With ``copies`` (the API's pages), the page is joined with its copies afterwards:
    only those rows, at most a page and its copies, are sorted."""
    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate.upgrade(engine)
    stmt = _backup_page(
        project=True, instance=instance, versions=False, states=False, limited=True, copies=copies
    )
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
    assert f"SEARCH backups USING INDEX {index}" in details, details
    # No sort of the matching rows; with copies, one of the page's rows, at the top level.
    sorts = [row for row in plan if "TEMP B-TREE" in row[-1]]
    assert [row[1] for row in sorts] == ([0] if copies else []), details
    if copies:
        assert "SEARCH backup_copies USING INDEX ix_backup_copies_backup_id" in details, details


@pytest.mark.parametrize("copies", [False, True])
def test_postgresql_plans_a_prepared_list_page_without_fetching_the_instances_rows(
    copies: bool,
) -> None:
    """The service's PostgreSQL driver prepares a statement it runs often, and the server
    then plans it once for any values (a generic plan). With every backup COMPLETED, a
    bound ``state != $1`` looked as if it matched no row, and a page of one instance's
    backups fetched all of them and sorted them. Planned as the server plans it after five
    runs, a page must read an index in its order and stop at the page; its copies (one
    per backup here) are found by their index."""
    import re

    from sqlalchemy import insert
    from sqlalchemy.dialects import postgresql

    from fixtures.metadata import postgresql_database
    from strongroom.persistence.backup_repository import BACKUPS
    from strongroom.persistence.copy_repository import COPIES

    with postgresql_database() as url:
        engine = create_engine(url)
        try:
            migrate.upgrade(engine)
            rows = [
                {
                    "id": f"{i:08d}-0000-4000-8000-000000000000",
                    "project_id": "p",
                    "name": f"b{i}",
                    "instance_id": f"i{(i // 7) % 20}",  # chains of 7, 20 instances in turn
                    "state": "COMPLETED",
                    "created": datetime(2024, 1, 1) + timedelta(minutes=i),
                    "updated": datetime(2024, 1, 1) + timedelta(minutes=i),
                    "progress_done": 0,
                }
                for i in range(4000)
            ]
            stmt = _backup_page(
                project=True,
                instance=True,
                versions=False,
                states=False,
                limited=True,
                copies=copies,
            )
            sql = str(stmt.compile(dialect=postgresql.psycopg.dialect()))
            names: list[str] = []

            def placeholder(match: re.Match[str]) -> str:
                if match.group(1) not in names:
                    names.append(match.group(1))
                return f"${names.index(match.group(1)) + 1}"

            prepared = re.sub(r"%\((\w+)\)s", placeholder, sql)
            values = {"project_id": "'p'", "instance_id": "'i0'", "offset": "0", "limit": "20"}
            with engine.begin() as conn:
                conn.execute(insert(BACKUPS), rows)
                conn.execute(insert(COPIES), [_copy_of(row) for row in rows])
                conn.exec_driver_sql("analyze backups")
                conn.exec_driver_sql("analyze backup_copies")
                conn.exec_driver_sql("set plan_cache_mode = force_generic_plan")
                conn.exec_driver_sql(f"prepare page as {prepared}")
                plan = conn.exec_driver_sql(
                    "explain (analyze, format json) execute page("
                    + ", ".join(values[n] for n in names)
                    + ")"
                ).scalar_one()
        finally:
            engine.dispose()
    assert plan[0]["Plan"]["Actual Rows"] == 20
    every = _nodes(plan[0]["Plan"])
    assert not [n for n in every if n["Node Type"] == "Seq Scan"], plan  # copies by index
    page = next(n for n in _nodes(plan[0]["Plan"]) if n["Node Type"] == "Limit")
    nodes = _nodes(page)
    kinds = {node["Node Type"] for node in nodes}
    assert kinds <= {"Limit", "Index Scan", "Incremental Sort"}, kinds
    scanned = sum(n["Actual Rows"] + n.get("Rows Removed by Filter", 0) for n in nodes[-1:])
    assert scanned < 1000, scanned  # the instance's 200 rows were not all fetched either


def _copy_of(backup: dict) -> dict:  # type: ignore[type-arg]
    """A copy of each backup, in another store."""
    return {
        "id": backup["id"].replace("-0000-", "-1111-"),
        "backup_id": backup["id"],
        "project_id": backup["project_id"],
        "store_name": "offsite",
        "container": "copies",
        "state": "COMPLETED",
        "created": backup["created"],
        "updated": backup["updated"],
    }


def _nodes(node: dict) -> list[dict]:  # type: ignore[type-arg]
    found = [node]
    for child in node.get("Plans", []):
        found += _nodes(child)
    return found
