"""A wait on a server that ends: a server, or a stand-in its owner put on its socket, may
accept a connection and then never answer. Timeouts the server enforces do not cover
that; the client cuts the connection itself."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator

import psycopg


@contextlib.contextmanager
def answered_within(fd: int, seconds: float) -> Iterator[None]:
    """Shut the connection on socket ``fd`` down if the block takes over ``seconds``: a
    call waiting on it then fails at once. Raises ``psycopg.OperationalError`` saying so
    when that happened."""
    lock = threading.Lock()
    state = {"done": False, "cut": False}

    def cut() -> None:
        with lock:
            if state["done"]:
                return
            state["cut"] = True
            with contextlib.suppress(OSError):
                severed = socket.socket(fileno=os.dup(fd))
                try:
                    severed.shutdown(socket.SHUT_RDWR)
                finally:
                    severed.close()

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    except Exception as exc:
        if state["cut"]:
            raise psycopg.OperationalError(
                f"the server did not answer within {seconds:.0f} s"
            ) from exc
        raise
    finally:
        with lock:
            state["done"] = True
        timer.cancel()
