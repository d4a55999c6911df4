"""What the API and the workers are given: the use cases, built by bootstrap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from strongroom.domain.model import RequestContext
from strongroom.services.account_relay import RelayedAccounts
from strongroom.services.accounts import AccountService
from strongroom.services.backups import BackupService
from strongroom.services.copies import CopyService
from strongroom.services.datastores import DatastoreCatalog
from strongroom.services.drills import DrillService
from strongroom.services.health import Health
from strongroom.services.instances import InstanceService
from strongroom.services.pitr_policy import PitrService
from strongroom.services.quotas import QuotaService
from strongroom.services.schedules import ScheduleService
from strongroom.services.tokens import TokenService
from strongroom.services.verification import VerificationService


class ExternalTokens(Protocol):
    """Tokens issued elsewhere (Keystone): judged beside the embedded ones."""

    def cached(self, token: str) -> RequestContext | None: ...

    async def authenticate(self, token: str) -> RequestContext | None: ...

    def refused(self, token: str) -> bool:
        """Whether the token was refused moments ago (no I/O)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Services:
    backups: BackupService
    instances: InstanceService
    datastores: DatastoreCatalog
    tokens: TokenService
    public_endpoint: str | None = None
    max_body_bytes: int = 1024 * 1024
    local_metadata: bool = False  # the metadata database is a SQLite file in the data dir
    request_threads: int = 8  # threads for blocking request handlers: the metadata pool's size
    schedules: ScheduleService | None = None
    verification: VerificationService | None = None
    drills: DrillService | None = None
    copies: CopyService | None = None
    health: Health | None = None
    # Signs dashboard session cookies; the same in every API process (derived from the
    # master key). Empty: a random key per process (sessions end with the process).
    session_key: bytes = b""
    accounts: AccountService | RelayedAccounts | None = None
    quotas: QuotaService | None = None
    external_tokens: ExternalTokens | None = None  # Keystone, when [keystone] is enabled
    pitr: PitrService | None = None
