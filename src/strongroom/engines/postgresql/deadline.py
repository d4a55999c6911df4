"""PostgreSQL's side of :mod:`strongroom.engines.deadline`: a wait on the server that ran
out fails as libpq's own errors do, with ``psycopg.OperationalError``."""

from __future__ import annotations

import contextlib

import psycopg

from strongroom.engines import deadline


def answered_within(fd: int, seconds: float) -> contextlib.AbstractContextManager[None]:
    """:func:`strongroom.engines.deadline.answered_within`, raising
    ``psycopg.OperationalError``."""
    return deadline.answered_within(fd, seconds, error=psycopg.OperationalError)
