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
"""

from __future__ import annotations

import asyncio
import hashlib
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
        self._cache: OrderedDict[str, tuple[float, RequestContext]] = OrderedDict()

    def cached(self, token: str) -> RequestContext | None:
        digest = _digest(token)
        entry = self._cache.get(digest)
        if entry is None:
            return None
        if entry[0] <= time.time():
            self._cache.pop(digest, None)
            return None
        return entry[1]

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
        """``validate`` off the event loop, bounded by ``validation_timeout``."""
        if (ctx := self.cached(token)) is not None:
            return ctx
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._pool, self.validate, token)
        try:
            judged = await asyncio.wait_for(call, self.settings.validation_timeout)
        except TimeoutError as exc:
            raise KeystoneUnavailable("Keystone did not answer in time.") from exc
        if judged is None:
            return None
        ctx, until = judged
        self._remember(token, until, ctx)  # on the event loop: the cache has one writer
        return ctx

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
