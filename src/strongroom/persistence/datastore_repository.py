"""SQL repository of datastores and their versions. It never commits; the unit of work does."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from strongroom.domain.model import Datastore, DatastoreVersion
from strongroom.persistence.tables import DatastoreRow, DatastoreVersionRow


class SqlDatastoreRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def ensure(self, datastore: Datastore) -> None:
        row = self._s.get(DatastoreRow, datastore.id)
        if row is None:
            self._add_once(
                DatastoreRow(
                    id=datastore.id,
                    name=datastore.name,
                    default_version_id=datastore.default_version_id,
                )
            )
        else:
            row.default_version_id = datastore.default_version_id
        for version in datastore.versions:
            vrow = self._s.get(DatastoreVersionRow, version.id)
            if vrow is None:
                self._add_once(
                    DatastoreVersionRow(
                        id=version.id,
                        datastore_id=datastore.id,
                        name=version.name,
                        active=version.active,
                    )
                )
            else:
                vrow.active = version.active

    def _add_once(self, row: DatastoreRow | DatastoreVersionRow) -> None:
        """Insert ``row``; when another process starting at the same moment inserted the
        same key first (hosts starting together on a new metadata database), keep its row:
        it records the same detection."""
        try:
            with self._s.begin_nested():  # a savepoint: its failure leaves the rest
                self._s.add(row)
        except IntegrityError:
            pass  # the savepoint's rollback took ``row`` out of the session

    def deactivate_all(self) -> None:
        self._s.execute(update(DatastoreVersionRow).values(active=False))

    def all(self) -> list[Datastore]:
        rows = self._s.execute(select(DatastoreRow).order_by(DatastoreRow.name)).scalars().all()
        versions = self._s.execute(
            select(DatastoreVersionRow).order_by(DatastoreVersionRow.name)
        ).scalars()
        by_ds: dict[str, list[DatastoreVersion]] = {}
        names = {r.id: r.name for r in rows}
        for v in versions:
            by_ds.setdefault(v.datastore_id, []).append(
                DatastoreVersion(
                    v.id, v.datastore_id, names.get(v.datastore_id, ""), v.name, v.active
                )
            )
        return [
            Datastore(r.id, r.name, r.default_version_id, tuple(by_ds.get(r.id, []))) for r in rows
        ]
