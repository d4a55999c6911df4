"""Dashboard sessions: a random cookie value mapped, in this process, to the token that
signed in. The cookie never carries the token; the token never appears in a URL.

Each request authenticates the stored token again (through the token cache), so a revoked
token ends its dashboard sessions as it ends its API calls."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

COOKIE = "strongroom_session"
LOGIN_COOKIE = "strongroom_login"  # binds the sign-in form to the browser that loaded it
IDLE_SECONDS = 2 * 3600
LIFETIME_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Session:
    token: str
    csrf: str  # put in every form; a POST without it is refused
    created: float
    seen: float


def _key(cookie: str) -> str:
    """Sessions are stored by the cookie's digest: a dump of this map cannot be replayed."""
    return hashlib.sha256(cookie.encode("utf-8", "replace")).hexdigest()


class SessionStore:
    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, token: str) -> tuple[str, Session]:
        """A new session for ``token``: (the cookie value, the session)."""
        cookie = secrets.token_urlsafe(32)
        now = time.monotonic()
        session = Session(token=token, csrf=secrets.token_urlsafe(32), created=now, seen=now)
        with self._lock:
            self._expire(now)
            if len(self._sessions) >= MAX_SESSIONS:  # the oldest goes first
                oldest = min(self._sessions, key=lambda k: self._sessions[k].seen)
                del self._sessions[oldest]
            self._sessions[_key(cookie)] = session
        return cookie, session

    def find(self, cookie: str | None) -> Session | None:
        if not cookie or len(cookie) > 128:
            return None
        now = time.monotonic()
        key = _key(cookie)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if now - session.seen > IDLE_SECONDS or now - session.created > LIFETIME_SECONDS:
                del self._sessions[key]
                return None
            session = Session(session.token, session.csrf, session.created, now)
            self._sessions[key] = session
        return session

    def close(self, cookie: str | None) -> None:
        if cookie:
            with self._lock:
                self._sessions.pop(_key(cookie), None)

    def _expire(self, now: float) -> None:
        stale = [
            k
            for k, s in self._sessions.items()
            if now - s.seen > IDLE_SECONDS or now - s.created > LIFETIME_SECONDS
        ]
        for k in stale:
            del self._sessions[k]


def same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
