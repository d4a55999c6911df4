"""Dashboard sessions as signed cookie values, valid in every API process.

The value is ``v1.<token digest>.<nonce>.<issued>.<HMAC-SHA256>``: the digest the token
store keeps (never the token, which cannot be recovered from it), signed with a key derived
from the master key. Each request looks the digest up again, so revoking the token ends
its sessions. The per-session CSRF token is an HMAC of the nonce. Signing out forgets the
cookie in the browser and refuses its nonce in this process until it would have expired.

What is kept of ended sessions is bounded by the tokens, not the sign-ins: a token's
last ``ENDED_PER_TOKEN`` nonces, and past them a time at or before which every session of
that token counts as ended (signing out many times may then end its older sessions too)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass

COOKIE = "strongroom_session"
LOGIN_COOKIE = "strongroom_login"  # binds the sign-in form to the browser that loaded it
LIFETIME_SECONDS = 8 * 3600
CLOCK_SKEW_SECONDS = 60  # API processes on several hosts do not share one clock
ENDED_PER_TOKEN = 16  # nonces of ended sessions kept per token
SWEEP_SECONDS = 60.0  # how often sign-outs drop what has expired anyway
VERSION = "v1"
SHAPE = re.compile(r"^v1\.([0-9a-f]{64})\.([A-Za-z0-9_-]{22})\.(\d{1,12})\.([0-9a-f]{64})$")


@dataclass(frozen=True)
class Session:
    token_digest: str
    nonce: str
    issued: int
    csrf: str  # put in every form; a POST without it is refused


class SessionSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key or secrets.token_bytes(32)
        # token digest -> {nonce: when it would have expired}, oldest sign-out first
        self._ended: dict[str, dict[str, float]] = {}
        # token digest -> sessions of it expiring at or before this time are ended
        self._ended_through: dict[str, float] = {}
        self._next_sweep = 0.0
        self._lock = threading.Lock()

    def _mac(self, label: str, text: str) -> str:
        return hmac.new(self._key, f"{label}:{text}".encode(), hashlib.sha256).hexdigest()

    def issue(self, token_digest: str) -> tuple[str, Session]:
        """A new session for the token with this digest: (the cookie value, the session)."""
        nonce = secrets.token_urlsafe(16)
        issued = int(time.time())
        payload = f"{VERSION}.{token_digest}.{nonce}.{issued}"
        cookie = f"{payload}.{self._mac('session', payload)}"
        return cookie, Session(token_digest, nonce, issued, self._mac("csrf", nonce))

    def read(self, cookie: str | None) -> Session | None:
        if not cookie or len(cookie) > 256:
            return None
        found = SHAPE.match(cookie)
        if found is None:
            return None
        digest, nonce, issued_text, mac = found.groups()
        payload = cookie.rsplit(".", 1)[0]
        if not hmac.compare_digest(mac, self._mac("session", payload)):
            return None
        issued = int(issued_text)
        now = time.time()
        if not issued - CLOCK_SKEW_SECONDS <= now <= issued + LIFETIME_SECONDS:
            return None
        with self._lock:
            if nonce in self._ended.get(digest, {}):
                return None
            if issued + LIFETIME_SECONDS <= self._ended_through.get(digest, 0.0):
                return None
        return Session(digest, nonce, issued, self._mac("csrf", nonce))

    def end(self, session: Session) -> None:
        now = time.time()
        digest = session.token_digest
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
                self._next_sweep = now + SWEEP_SECONDS
            ended = self._ended.setdefault(digest, {})
            ended[session.nonce] = session.issued + LIFETIME_SECONDS
            while len(ended) > ENDED_PER_TOKEN:
                until = ended.pop(next(iter(ended)))
                self._ended_through[digest] = max(self._ended_through.get(digest, 0.0), until)

    def _sweep(self, now: float) -> None:
        for digest, ended in list(self._ended.items()):
            for nonce in [n for n, until in ended.items() if until < now]:
                del ended[nonce]
            if not ended:
                del self._ended[digest]
        for digest, until in list(self._ended_through.items()):
            if until < now:
                del self._ended_through[digest]

    def ended_count(self) -> int:
        """How many ended sessions are remembered (nonces and per-token times)."""
        with self._lock:
            return sum(map(len, self._ended.values())) + len(self._ended_through)


def same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())
