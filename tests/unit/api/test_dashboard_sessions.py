"""Signed dashboard session cookies: what they carry, and every way a changed, foreign,
expired or ended one is refused."""

from __future__ import annotations

import hashlib
import time

import pytest

from strongroom.api.dashboard import sessions
from strongroom.api.dashboard.sessions import LIFETIME_SECONDS, SessionSigner

TOKEN = "srt_example-token-value"
DIGEST = hashlib.sha256(TOKEN.encode()).hexdigest()
KEY = b"k" * 32


def test_session_cookie_carries_the_digest_never_the_token() -> None:
    cookie, session = SessionSigner(KEY).issue(DIGEST)
    assert TOKEN not in cookie and DIGEST in cookie
    assert SessionSigner(KEY).read(cookie) == session  # another process, the same key
    assert session.csrf not in cookie  # the form token is not in the cookie


def test_session_cookie_signed_by_another_key_is_refused() -> None:
    cookie, _ = SessionSigner(b"x" * 32).issue(DIGEST)
    assert SessionSigner(KEY).read(cookie) is None
    assert SessionSigner(b"").read(cookie) is None  # an empty key means a random one


@pytest.mark.parametrize("part", [1, 2, 3, 4])
def test_session_cookie_with_any_part_changed_is_refused(part: int) -> None:
    cookie, _ = SessionSigner(KEY).issue(DIGEST)
    pieces = cookie.split(".")
    swap = "1" if pieces[part][-1] != "1" else "2"
    pieces[part] = pieces[part][:-1] + swap
    assert SessionSigner(KEY).read(".".join(pieces)) is None


@pytest.mark.parametrize(
    "cookie", ["", "v1", "v1....", "x" * 300, "v2." + "a" * 64 + ".n.1.m", "\x00" * 10]
)
def test_session_cookie_of_the_wrong_shape_is_refused(cookie: str) -> None:
    assert SessionSigner(KEY).read(cookie) is None


def test_session_cookie_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = SessionSigner(KEY)
    cookie, _ = signer.issue(DIGEST)
    later = time.time() + LIFETIME_SECONDS + 1
    monkeypatch.setattr(sessions.time, "time", lambda: later)
    assert signer.read(cookie) is None


def test_session_cookie_from_the_future_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = SessionSigner(KEY)
    earlier = time.time() - 3600
    cookie, _ = signer.issue(DIGEST)
    monkeypatch.setattr(sessions.time, "time", lambda: earlier)
    assert signer.read(cookie) is None


def test_ended_session_is_refused_here() -> None:
    signer = SessionSigner(KEY)
    cookie, session = signer.issue(DIGEST)
    other, _ = signer.issue(DIGEST)
    signer.end(session)
    assert signer.read(cookie) is None
    assert signer.read(other) is not None  # only that one
