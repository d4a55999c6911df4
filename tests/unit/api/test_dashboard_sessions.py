"""Signed dashboard session cookies: what they carry, and every way a changed, foreign,
expired or ended one is refused."""

from __future__ import annotations

import hashlib
import time

import pytest

from strongroom.api.dashboard import sessions
from strongroom.api.dashboard.sessions import (
    ENDED_PER_TOKEN,
    LIFETIME_SECONDS,
    SWEEP_SECONDS,
    SessionSigner,
)

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


def test_many_sign_outs_keep_a_bounded_record_and_end_every_session_they_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signer = SessionSigner(KEY)
    clock = [time.time()]
    monkeypatch.setattr(sessions.time, "time", lambda: clock[0])
    ended = []
    for _ in range(ENDED_PER_TOKEN * 4):
        clock[0] += 1.0  # a sign-in and its sign-out each second
        cookie, session = signer.issue(DIGEST)
        signer.end(session)
        ended.append(cookie)
    assert signer.ended_count() <= ENDED_PER_TOKEN + 1
    assert [c for c in ended if signer.read(c) is not None] == []
    clock[0] += 1.0
    fresh, _ = signer.issue(DIGEST)
    assert signer.read(fresh) is not None  # issued after every ended one
    # Once they would have expired anyway, nothing of them is kept.
    clock[0] += LIFETIME_SECONDS + SWEEP_SECONDS + 2
    _, session = signer.issue(DIGEST)
    signer.end(session)
    assert signer.ended_count() == 1
