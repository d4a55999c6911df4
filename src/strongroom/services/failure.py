"""Failure reasons that are safe to show: the error's own message, never a traceback."""

from __future__ import annotations

MAX_REASON = 2000


def describe_failure(exc: BaseException) -> str:
    message = str(exc).strip() or type(exc).__name__
    kind = type(exc).__name__
    text = message if message.startswith(kind) else f"{kind}: {message}"
    return text[:MAX_REASON]
