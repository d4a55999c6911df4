"""Backup verification: read every object of a backup and its chain back from the store.

Each manifest is authenticated (and bound to its child by the checksum the child
recorded), then every chunk is fetched, authenticated (AES-GCM) and decompressed by the
pipeline's reader, and the stream's length checked against the manifest: what a restore
does, without an engine. Chunks stream through a bounded prefetch window, so memory does
not grow with the backup. It runs as a job (``verify_backup``), on any worker."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import attrs

from strongroom.domain.model import (
    Backup,
    BackupState,
    JobKind,
    Verification,
    VerifyStatus,
)
from strongroom.domain.ports import UnitOfWork
from strongroom.pipeline.errors import FormatError, MissingChunkError
from strongroom.pipeline.reader import ChunkReader
from strongroom.services import object_layout
from strongroom.services.backup_checks import BackupCheckJob, BackupCheckRequests
from strongroom.services.failure import describe_failure
from strongroom.services.telemetry import NO_TELEMETRY, Telemetry
from strongroom.services.transfer import ChainLink
from strongroom.storage.errors import ObjectNotFoundError

log = logging.getLogger(__name__)

READ_SIZE = 1 << 20
VERIFIABLE = (BackupState.COMPLETED, BackupState.RESTORED)


class VerificationService(BackupCheckRequests):
    """Asks for a verification: records RUNNING and a job in one transaction."""

    rule = "backup:verify"
    kind = JobKind.VERIFY_BACKUP
    done = "verified"
    states = VERIFIABLE

    def last(self, backup: Backup) -> Verification | None:
        return backup.verification

    def record_running(self, uow: UnitOfWork, backup: Backup, now: datetime) -> None:
        backup.verification = Verification(VerifyStatus.RUNNING, now)
        uow.backups.record_verification(backup.id, backup.verification)


@attrs.define(kw_only=True, eq=False, repr=False, slots=False)
class Verifier(BackupCheckJob):
    """The ``verify_backup`` job."""

    _telemetry: Telemetry = NO_TELEMETRY

    def __call__(self, backup_id: str, _payload: dict[str, Any]) -> None:
        backup = self._live(backup_id)
        if backup is None:
            return
        status, error = self.check(backup)
        self._telemetry.verification(result=status.value)
        log.info("backup %s verified: %s", backup_id, status, extra={"backup_id": backup_id})
        with self._uow(write=True) as uow:
            uow.backups.record_verification(
                backup_id, Verification(status, self._clock.now(), error)
            )
            uow.commit()

    def verify_completed(self) -> list[tuple[Backup, Verification]]:
        """Verify every COMPLETED backup now, one after another (`strongroom check
        --read-data`), recording each result on the backup as the job does."""
        with self._uow() as uow:
            completed = uow.backups.in_states([BackupState.COMPLETED])
        results = []
        for backup in sorted(completed, key=lambda b: b.created):
            status, error = self.check(backup)
            verification = Verification(status, self._clock.now(), error)
            with self._uow(write=True) as uow:
                uow.backups.record_verification(backup.id, verification)
                uow.commit()
            results.append((backup, verification))
        return results

    def check(self, backup: Backup) -> tuple[VerifyStatus, str | None]:
        try:
            for link in self._open_chain(backup):
                self._read_through(link)
        except (ObjectNotFoundError, MissingChunkError) as exc:
            return VerifyStatus.MISSING, describe_failure(exc)
        except FormatError as exc:
            return VerifyStatus.CORRUPT, describe_failure(exc)
        except Exception as exc:
            log.warning("could not verify backup %s: %s", backup.id, exc)
            return VerifyStatus.ERROR, describe_failure(exc)
        return VerifyStatus.OK, None

    def _read_through(self, link: ChainLink) -> None:
        read_through(link, self._transfer.rules.transfer_threads)


def read_through(link: ChainLink, threads: int) -> None:
    """Fetch, authenticate and decompress every chunk of ``link`` and check the stream's
    length (raises what the reader finds), in a bounded window of ``threads * 2`` chunks."""
    reader = ChunkReader(
        link.opened,
        lambda i: link.store.get(object_layout.chunk_key_beside(link.manifest_key, i)),
        prefetch=threads * 2,
        workers=threads,
        missing=(ObjectNotFoundError,),
    )
    try:
        while reader.read(READ_SIZE):
            pass
    finally:
        reader.close()
