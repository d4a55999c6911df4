"""A wait on a server that ends, for every engine: a server, or a stand-in its owner put
on its socket, may accept a connection and then never answer, or answer a byte at a time.
Timeouts the server enforces do not cover that, nor does a client's timeout on each read
(every byte starts it again); the client cuts the connection itself."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from strongroom.engines.base import ByteSource, RestoreInput


@contextlib.contextmanager
def answered_within(
    fd: int, seconds: float, *, error: Callable[[str], Exception]
) -> Iterator[None]:
    """Shut the connection on socket ``fd`` down if the block takes over ``seconds``: a
    call waiting on it then fails at once. Raises ``error`` (made from a message saying
    so) when that happened."""
    # A descriptor of its own: the client may close ``fd`` within the block and its number
    # go to another file, which the cut must never reach.
    held = socket.socket(fileno=os.dup(fd))
    lock = threading.Lock()
    state = {"done": False, "cut": False}

    def cut() -> None:
        with lock:
            if state["done"]:
                return
            state["cut"] = True
            with contextlib.suppress(OSError):
                held.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    except Exception as exc:
        if state["cut"]:
            raise error(f"the server did not answer within {seconds:.0f} s") from exc
        raise
    finally:
        with lock:
            state["done"] = True
        timer.cancel()
        held.close()


class ReadBy:
    """A restore stream that fails once ``deadline`` (``time.monotonic()``) has passed: a
    restore given a time stops laying out at it, whatever the backup holds. Keeps the
    source's ``skip``, ``reader_at`` (see ``ByteSource``) and ``close`` where it has them."""

    def __init__(self, source: ByteSource, deadline: float, error: Callable[[str], Exception]):
        self._source = source
        self._deadline = deadline
        self._error = error

    def _check(self) -> None:
        if time.monotonic() >= self._deadline:
            raise self._error("the restore ran out of time while reading the backup")

    def read(self, size: int, /) -> bytes:
        self._check()
        return self._source.read(size)

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._source, name)  # AttributeError where the source lacks it
        if name == "close":  # the pipeline's readers let their fetch threads go
            return found
        if name == "skip":

            def skip(size: int, /) -> None:
                self._check()
                found(size)

            return skip
        if name == "reader_at":
            return lambda offset: ReadBy(found(offset), self._deadline, self._error)
        raise AttributeError(name)


def seconds_left(
    deadline: float | None, most: float, error: Callable[[str], Exception], when: str
) -> float:
    """``most`` seconds, or fewer where ``deadline`` (``time.monotonic()``) comes sooner;
    none left raises ``error`` saying ``when``."""
    if deadline is None:
        return most
    left = deadline - time.monotonic()
    if left <= 0:
        raise error(f"the restore ran out of time {when}")
    return min(most, left)


def read_by(
    chain: Sequence[RestoreInput], deadline: float | None, error: Callable[[str], Exception]
) -> list[RestoreInput]:
    """``chain`` with each stream failing once ``deadline`` has passed (``None``: as it is)."""
    if deadline is None:
        return list(chain)
    return [RestoreInput(i.metadata, ReadBy(i.stream, deadline, error)) for i in chain]
