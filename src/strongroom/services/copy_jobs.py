"""The copy jobs (``copy_backup``, ``delete_copy``), the removal of a deleted backup's
copies, and the restore that falls back to a copy."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from strongroom.domain.model import Backup, BackupCopy, BackupState, CopyState
from strongroom.domain.ports import Clock, UnitOfWorkFactory
from strongroom.engines.base import Connection, Engine, InstanceRequest
from strongroom.pipeline.errors import FormatError
from strongroom.services.copy_objects import CopyWriter, at_copy
from strongroom.services.failure import describe_failure
from strongroom.services.transfer import Transfer
from strongroom.storage.errors import StorageError

log = logging.getLogger(__name__)


def is_data_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the store failing or its data not
    verifying, rather than the engine or the request: then a copy may do better."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, StorageError | FormatError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class CopyJobs:
    _uow: UnitOfWorkFactory
    _clock: Clock
    _transfer: Transfer
    _writer: CopyWriter

    # -- copy_backup -------------------------------------------------------------------
    def copy(self, _target: str, payload: dict[str, Any]) -> None:
        """Copy and verify each link of ``payload["chain"]`` (copy ids, parents first)."""
        chain: list[str] = list(payload.get("chain", []))
        for index, copy_id in enumerate(chain):
            with self._uow() as uow:
                copy = uow.copies.find(copy_id)
                backup = uow.backups.find(copy.backup_id) if copy else None
            if copy is None or copy.state is not CopyState.COPYING:
                continue  # copied already (a parent shared with another copy), or dropped
            try:
                if backup is None or backup.state is not BackupState.COMPLETED:
                    raise RuntimeError("the backup is no longer available")
                location = self._writer.copy(backup, copy.store_name, copy.container)
                if not self._record(copy_id, location=location):
                    # Dropped meanwhile (its backup deleted): what was written goes too,
                    # and the links built on it cannot be copied.
                    self._transfer.discard_objects(at_copy(backup, copy))
                    self._fail_rest(chain[index + 1 :], "its parent's copy was dropped")
                    return
                self._writer.verify(backup, self._finder(copy.store_name))
            except Exception as exc:
                reason = describe_failure(exc)
                self._fail(copy_id, reason)
                self._fail_rest(chain[index + 1 :], f"the copy of its parent failed: {reason}")
                raise
            if not self._record(copy_id, verified=True):
                self._transfer.discard_objects(at_copy(backup, copy))
                self._fail_rest(chain[index + 1 :], "its parent's copy was dropped")
                return
            log.info(
                "backup copied to store %s and verified",
                copy.store_name,
                extra={"project_id": copy.project_id, "backup_id": copy.backup_id},
            )

    def _fail_rest(self, later: Sequence[str], reason: str) -> None:
        for copy_id in later:
            self._fail(copy_id, reason)

    def _finder(self, store_name: str) -> Callable[[str], Backup | None]:
        """Each backup as it sits in ``store_name`` (None when it has no copy there)."""

        def find(backup_id: str) -> Backup | None:
            with self._uow() as uow:
                backup = uow.backups.find(backup_id)
                copy = uow.copies.in_store(backup_id, store_name)
            if backup is None or copy is None or copy.location_ref is None:
                return None
            return at_copy(backup, copy)

        return find

    def _record(self, copy_id: str, *, location: str | None = None, verified: bool = False) -> bool:
        """Record progress on a copy still COPYING; False when it no longer is."""
        with self._uow(write=True) as uow:
            copy = uow.copies.find(copy_id)
            if copy is None or copy.state is not CopyState.COPYING:
                return False
            now = self._clock.now()
            if location is not None:
                copy.location_ref = location
            if verified:
                copy.state = CopyState.COMPLETED
                copy.verified_at = now
            copy.updated = now
            uow.copies.save(copy)
            uow.commit()
        return True

    def _fail(self, copy_id: str, reason: str) -> None:
        with self._uow(write=True) as uow:
            copy = uow.copies.find(copy_id)
            if copy is None or copy.state is not CopyState.COPYING:
                return
            copy.state = CopyState.FAILED
            copy.error = reason
            copy.updated = self._clock.now()
            uow.copies.save(copy)
            uow.commit()
        log.warning("backup copy %s failed: %s", copy_id, reason)

    # -- delete_copy, and a deleted backup's copies --------------------------------------
    def delete(self, copy_id: str, _payload: dict[str, Any]) -> None:
        with self._uow() as uow:
            copy = uow.copies.find(copy_id)
            backup = uow.backups.find(copy.backup_id) if copy else None
        if copy is None:
            return
        if backup is not None:
            self._transfer.remove_objects(at_copy(backup, copy))
        with self._uow(write=True) as uow:
            uow.copies.remove(copy_id)
            uow.commit()

    def remove_copies(self, backup: Backup) -> None:
        """Remove every copy of ``backup`` (objects, then row). Raises StorageError."""
        with self._uow() as uow:
            copies = uow.copies.of_backups([backup.id])
        for copy in copies:
            self._transfer.remove_objects(at_copy(backup, copy))
            with self._uow(write=True) as uow:
                uow.copies.remove(copy.id)
                uow.commit()

    # -- restore -----------------------------------------------------------------------
    def restore(
        self,
        *,
        target: Backup,
        find_backup: Callable[[str], Backup | None],
        engine: Engine,
        home: Path,
        request: InstanceRequest,
        discard: Callable[[], None],
    ) -> tuple[Connection, str | None]:
        """Restore from the backup's own store; when that store fails or its data does not
        verify, from each verified copy in turn (``discard`` clears what the failed
        attempt left). Returns the connection and, after a fallback, the note saying so."""
        try:
            connection = self._transfer.restore(
                target=target, find_backup=find_backup, engine=engine, home=home, request=request
            )
            return connection, None
        except Exception as exc:
            if not is_data_failure(exc):
                raise
            primary_failure = exc
        for copy in self._verified_copies(target):
            log.warning(
                "restore of backup %s from store %s failed (%s); trying its copy in %s",
                target.id,
                target.store_name,
                describe_failure(primary_failure),
                copy.store_name,
            )
            discard()
            try:
                connection = self._transfer.restore(
                    target=at_copy(target, copy),
                    find_backup=self._finder(copy.store_name),
                    engine=engine,
                    home=home,
                    request=request,
                )
            except Exception as exc:
                if not is_data_failure(exc):
                    raise
                log.warning("the copy in store %s failed too: %s", copy.store_name, exc)
                continue
            note = (
                f"Restored from the copy of backup {target.id} in store "
                f"{copy.store_name!r}: the backup's own store failed "
                f"({describe_failure(primary_failure)})."
            )
            return connection, note
        raise primary_failure

    def _verified_copies(self, target: Backup) -> list[BackupCopy]:
        with self._uow() as uow:
            copies = uow.copies.of_backups([target.id])
        return [c for c in copies if c.state is CopyState.COMPLETED and c.location_ref]
