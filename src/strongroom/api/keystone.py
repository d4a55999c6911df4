"""X-Auth-Token validated by Keystone, as OpenStack services do it.

keystoneclient's ``tokens.validate`` over a keystoneauth1 session logged in as the service
user: the same call keystonemiddleware's ``auth_token`` makes, through the library's public
API. ``AuthProtocol`` itself is a WSGI middleware built on oslo.config; its token cache and
validation are not public API, so the ASGI service calls the client directly and keeps its
own cache, honouring keystonemiddleware's option names (``[keystone]`` in the config).

Calls block, so they run in a small pool of their own with a timeout: a slow or absent
Keystone makes requests fail with 503 (:class:`KeystoneUnavailable`), never hang the event
loop. Expired, revoked and unknown tokens are refused (None → 401). A validated token is
trusted until ``token_cache_time`` seconds pass or it expires, whichever comes first, as
with keystonemiddleware: a token revoked meanwhile stays usable for at most that long.

Anyone can send tokens, so refusals are bounded too: a refused token is refused again
without asking Keystone for ``REFUSED_CACHE_SECONDS``, and beyond ``VALIDATION_QUEUE``
validations waiting for a thread a request is answered 503 at once instead of queueing
behind them. Both caches key on the token's SHA-256, never the token.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3 as ks_identity
from keystoneclient.v3 import client as ks_client

from strongroom.config import KeystoneSettings
from strongroom.domain.model import RequestContext
from strongroom.services.authorization import Authorizer

VALIDATION_THREADS = 4  # concurrent calls to Keystone at most; more wait, then time out
VALIDATION_QUEUE = 64  # validations waiting for a thread at most; more are refused at once
REFUSED_CACHE_SECONDS = 30.0  # a refused token is refused again without asking for this long
REFUSED_CACHE_MAX = 10_000  # refused tokens remembered at most (the oldest are forgotten)


class KeystoneUnavailable(Exception):
    """Keystone did not answer, answered with a server error, or refused the service's own
    credentials: no token can be judged now."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _expiry(access: Any) -> float:
    expires: datetime | None = access.expires
    if expires is None:
        return float("inf")
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return expires.timestamp()


class KeystoneTokens:
    """Token → :class:`RequestContext` (project, user, role names) by asking Keystone."""

    def __init__(self, settings: KeystoneSettings, authorizer: Authorizer) -> None:
        self.settings = settings
        self._authz = authorizer
        password = settings.password.get_secret_value() if settings.password else None
        if settings.auth_url is None or password is None:  # the settings refuse this too
            raise ValueError("[keystone] needs auth_url and password")
        auth = ks_identity.Password(
            auth_url=settings.auth_url,
            username=settings.username,
            password=password,
            project_name=settings.project_name,
            user_domain_name=settings.user_domain_name,
            project_domain_name=settings.project_domain_name,
        )
        timeout = min(settings.http_connect_timeout, settings.validation_timeout)
        self._session = ks_session.Session(auth=auth, timeout=timeout)
        self._client = ks_client.Client(
            session=self._session,
            interface=settings.interface,
            region_name=settings.region_name,
        )
        self._pool = ThreadPoolExecutor(VALIDATION_THREADS, thread_name_prefix="keystone")
        # Validations running or waiting; released when one ends, even after its timeout.
        self._slots = threading.BoundedSemaphore(VALIDATION_THREADS + VALIDATION_QUEUE)
        self._cache: OrderedDict[str, tuple[float, RequestContext]] = OrderedDict()
        self._refused: OrderedDict[str, float] = OrderedDict()  # digest → monotonic deadline

    def cached(self, token: str) -> RequestContext | None:
        digest = _digest(token)
        entry = self._cache.get(digest)
        if entry is None:
            return None
        if entry[0] <= time.time():
            self._cache.pop(digest, None)
            return None
        return entry[1]

    def refused(self, token: str) -> bool:
        """Whether Keystone refused ``token`` in the last ``REFUSED_CACHE_SECONDS``; no I/O."""
        digest = _digest(token)
        until = self._refused.get(digest)
        if until is None:
            return False
        if until <= time.monotonic():
            self._refused.pop(digest, None)
            return False
        return True

    def _remember_refusal(self, token: str) -> None:
        digest = _digest(token)
        self._refused.pop(digest, None)  # re-inserted last: the oldest go first
        self._refused[digest] = time.monotonic() + REFUSED_CACHE_SECONDS
        while len(self._refused) > REFUSED_CACHE_MAX:
            self._refused.popitem(last=False)

    def _remember(self, token: str, until: float, ctx: RequestContext) -> None:
        if until <= time.time():
            return
        self._cache[_digest(token)] = (until, ctx)
        while len(self._cache) > self.settings.cache_max_tokens:
            self._cache.popitem(last=False)

    def validate(self, token: str) -> tuple[RequestContext, float] | None:
        """Blocking: ask Keystone about ``token``: its context and until when it may be
        trusted without asking again, or None when Keystone refuses it."""
        try:
            access = self._client.tokens.validate(token, include_catalog=False)
        except (ks_exceptions.NotFound, ks_exceptions.BadRequest):
            return None  # unknown, expired or revoked (Keystone answers 404)
        except ks_exceptions.Unauthorized as exc:
            # The subject token is judged by a 404; a 401 is about the service's own login.
            raise KeystoneUnavailable(f"Keystone refused the service's credentials: {exc}") from exc
        except ks_exceptions.ClientException as exc:
            raise KeystoneUnavailable(f"Keystone did not validate the token: {exc}") from exc
        if not access.project_scoped or not access.project_id:
            return None  # unscoped or domain-scoped: no project to serve
        ctx = self._authz.caller(access.project_id, access.user_id, tuple(access.role_names))
        return ctx, min(time.time() + self.settings.token_cache_time, _expiry(access))

    async def authenticate(self, token: str) -> RequestContext | None:
        """``validate`` off the event loop, bounded by ``validation_timeout`` and by
        ``VALIDATION_QUEUE`` validations waiting before it."""
        if (ctx := self.cached(token)) is not None:
            return ctx
        if self.refused(token):
            return None
        if not self._slots.acquire(blocking=False):
            raise KeystoneUnavailable("Too many token validations are waiting for Keystone.")
        try:
            future = self._pool.submit(self.validate, token)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        try:
            judged = await asyncio.wait_for(
                asyncio.wrap_future(future), self.settings.validation_timeout
            )
        except TimeoutError as exc:
            raise KeystoneUnavailable("Keystone did not answer in time.") from exc
        # On the event loop: the caches have one writer.
        if judged is None:
            self._remember_refusal(token)
            return None
        ctx, until = judged
        self._remember(token, until, ctx)
        return ctx

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
