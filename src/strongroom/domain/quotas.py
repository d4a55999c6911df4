"""Quota arithmetic."""

from __future__ import annotations

from strongroom.domain.errors import QuotaExceededError

UNLIMITED = -1


def check_quota(*, resource: str, in_use: int, limit: int, delta: int = 1) -> None:
    if limit != UNLIMITED and in_use + delta > limit:
        raise QuotaExceededError([resource])


def release(in_use: int, count: int) -> int:
    """Usage after ``count`` deletions, floored at zero as Trove does."""
    return max(0, in_use - count)
