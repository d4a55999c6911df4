"""The embedded token store (no Keystone): token → project, user, roles.

Tokens are 256-bit random strings, so a plain SHA-256 is the right stored form (nothing to
brute-force); the lookup compares digests in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

from strongroom.domain.errors import NotFoundError
from strongroom.domain.model import ProjectId, RequestContext
from strongroom.domain.ports import Clock, TokenRecord, UnitOfWorkFactory
from strongroom.services.authorization import Authorizer

TOKEN_PREFIX = "srt_"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    id: str
    token: str
    project_id: str
    user_id: str
    roles: tuple[str, ...]


CACHE_SECONDS = 5.0


class TokenService:
    """Validated tokens are remembered for ``CACHE_SECONDS`` (a lookup per request costs
    more than the request): a revocation through this process applies at once, one made
    by another process (``strongroom token revoke``) within that time.

    ``authorizer`` decides which callers are admins; without it (the `token` commands,
    which authenticate nobody) none is."""

    def __init__(
        self, uow: UnitOfWorkFactory, clock: Clock, authorizer: Authorizer | None = None
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._authz = authorizer
        self._cache: dict[str, tuple[float, RequestContext]] = {}
        self._lock = threading.Lock()

    def create(self, *, project_id: str, user_id: str, roles: tuple[str, ...]) -> IssuedToken:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(
            id=str(uuid.uuid4()),
            token_hash=token_digest(token),
            project_id=project_id,
            user_id=user_id,
            roles=roles,
            created=self._clock.now(),
        )
        with self._uow(write=True) as uow:
            uow.tokens.add(record)
            uow.commit()
        return IssuedToken(record.id, token, project_id, user_id, roles)

    def cached(self, token: str | None) -> RequestContext | None:
        """The caller of a token validated in the last ``CACHE_SECONDS``; no I/O."""
        if not token or len(token) > 512:
            return None
        with self._lock:
            entry = self._cache.get(token_digest(token))
        if entry is not None and time.monotonic() - entry[0] < CACHE_SECONDS:
            return entry[1]
        return None

    def authenticate(self, token: str | None) -> RequestContext | None:
        if not token or len(token) > 512:
            return None
        if (ctx := self.cached(token)) is not None:
            return ctx
        return self.authenticate_digest(token_digest(token))

    def authenticate_digest(self, digest: str) -> RequestContext | None:
        """The caller of the token whose digest this is (what a dashboard session holds
        instead of the token); None when unknown or revoked."""
        with self._lock:
            entry = self._cache.get(digest)
        if entry is not None and time.monotonic() - entry[0] < CACHE_SECONDS:
            return entry[1]
        now = time.monotonic()
        with self._uow() as uow:
            record = uow.tokens.find_by_hash(digest)
        if record is None or record.revoked is not None:
            return None
        if not hmac.compare_digest(record.token_hash, digest):
            return None
        if self._authz is not None:
            ctx = self._authz.caller(record.project_id, record.user_id, record.roles)
        else:
            ctx = RequestContext(ProjectId(record.project_id), record.user_id, record.roles)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now, ctx)
        return ctx

    def list(self) -> list[TokenRecord]:
        with self._uow() as uow:
            return uow.tokens.list()

    def revoke(self, token_id: str) -> None:
        with self._uow(write=True) as uow:
            if not uow.tokens.revoke(token_id, self._clock.now()):
                raise NotFoundError(f"No active token with id {token_id}.")
            uow.commit()
        with self._lock:
            self._cache.clear()

    def is_empty(self) -> bool:
        with self._uow() as uow:
            return uow.tokens.count() == 0
